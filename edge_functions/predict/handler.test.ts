/**
 * The predict function against a real pgmlops database, over HTTP on a loopback port: a served
 * project (a compiled version, approved and deployed through the SQL API) scored as its tenant's
 * members, and every way a call is refused.
 *
 * Run: `deno task test` in edge_functions/ (tests/test_edge_functions.py sets the environment).
 */

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import { asCaller, connect, verifierFromEnv } from "../_shared/caller.ts";
import {
  countPredictions,
  expectedProbability,
  ownerConnection,
  SECRET,
  serve,
  servedProject,
  sign,
  user,
} from "../_shared/testing.ts";
import { predictHandler } from "./handler.ts";

Deno.test("predict", async (t) => {
  const owner = ownerConnection();
  const sql = connect();
  const { server, url, post } = serve(predictHandler(sql, verifierFromEnv()));

  const [userA, userB, viewerA] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const [{ id: tenantA }] = await owner`select ml.create_tenant('predict A', ${userA}::uuid) as id`;
  const [{ id: tenantB }] = await owner`select ml.create_tenant('predict B', ${userB}::uuid) as id`;
  await owner`select ml.add_tenant_member(${tenantA}::uuid, ${viewerA}::uuid, 'viewer')`;
  const versionA = await servedProject(owner, tenantA, userA, "churn");
  await servedProject(owner, tenantA, userA, "svm", { scoring: "worker" });
  await servedProject(owner, tenantA, userA, "undeployed", { deploy: false });
  await servedProject(owner, tenantB, userB, "secret");
  const tokenA = await sign(user(userA));
  const call = (body: unknown, token = tokenA) => post(JSON.stringify(body), token);

  try {
    await t.step("a member scores the project: the prediction is returned and logged in their tenant", async () => {
      const before = await countPredictions(owner, tenantA);
      const res = await call({ project: "churn", features: { spend: 10.5 }, entity_key: "c1" });
      assertEquals(res.status, 200, await res.clone().text());
      const body = await res.json();
      assertEquals([body.prediction, body.model, body.version, body.arm], [1, "churn", 1, "main"]);
      const probability = Object.values(body.probabilities as Record<string, number>).at(-1)!;
      assert(Math.abs(probability - expectedProbability(10.5)) < 1e-9, JSON.stringify(body));
      const rows = await owner`select tenant_id, model_version_id, arm, entity_key, features, prediction
                               from ml.predictions where id = ${body.prediction_id}::uuid`;
      assertEquals(rows.length, 1);
      assertEquals(
        [
          rows[0].tenant_id,
          rows[0].model_version_id,
          rows[0].arm,
          rows[0].entity_key,
          rows[0].features,
          rows[0].prediction,
        ],
        [tenantA, versionA, "main", "c1", { spend: 10.5 }, 1],
      );
      assertEquals(await countPredictions(owner, tenantA), before + 1);
    });

    await t.step("a viewer may score, and so may a service token acting for the tenant", async () => {
      const viewer = await call({ project: "churn", features: { spend: 1 } }, await sign(user(viewerA)));
      assertEquals(viewer.status, 200, await viewer.clone().text());
      assertEquals((await viewer.json()).prediction, 0);
      const service = await call(
        { project: "churn", features: { spend: 2 } },
        await sign({ role: "service_role", app_metadata: { tenant_id: tenantA } }),
      );
      assertEquals(service.status, 200, await service.clone().text());
      await service.body?.cancel();
    });

    await t.step("tenant A cannot score tenant B's project: not found (404), nothing logged anywhere", async () => {
      const [a, b] = [await countPredictions(owner, tenantA), await countPredictions(owner, tenantB)];
      const res = await call({ project: "secret", features: { spend: 10.5 } });
      assertEquals(res.status, 404);
      const body = await res.json();
      assertEquals(body.code, "P0002");
      assertMatch(body.error, /secret/);
      assertEquals([await countPredictions(owner, tenantA), await countPredictions(owner, tenantB)], [a, b]);
    });

    await t.step("a token naming tenant B is refused there (403), nothing logged", async () => {
      const b = await countPredictions(owner, tenantB);
      const res = await call(
        { project: "secret", features: { spend: 10.5 } },
        await sign(user(userA, { app_metadata: { tenant_id: tenantB } })),
      );
      assertEquals(res.status, 403);
      const body = await res.json();
      assertEquals(body.code, "42501");
      assertMatch(body.error, /is not a member of tenant/);
      assertEquals(await countPredictions(owner, tenantB), b);
    });

    await t.step("invalid features are refused with the SQL API's message naming the feature (422)", async () => {
      const before = await countPredictions(owner, tenantA);
      for (const features of [{}, { spend: "lots" }, { spend: 1, extra: 2 }]) {
        const res = await call({ project: "churn", features });
        assertEquals(res.status, 422, JSON.stringify(features));
        const body = await res.json();
        assertEquals(body.code, "22023");
        assertMatch(body.error, /spend|extra/);
      }
      assertEquals(await countPredictions(owner, tenantA), before);
    });

    await t.step("a version only workers can score is a conflict (409) pointing to ml.score", async () => {
      const before = await countPredictions(owner, tenantA);
      const res = await call({ project: "svm", features: { spend: 1 } });
      assertEquals(res.status, 409);
      const body = await res.json();
      assertEquals(body.code, "0A000");
      assertMatch(`${body.error} ${body.hint ?? ""}`, /ml\.score/);
      assertEquals(await countPredictions(owner, tenantA), before);
    });

    await t.step("a project with no active deployment is not found (404)", async () => {
      const res = await call({ project: "undeployed", features: { spend: 1 } });
      assertEquals(res.status, 404);
      assertEquals((await res.json()).code, "P0002");
    });

    await t.step("a body that is not JSON, or not of the request's shape, is a bad request (400)", async () => {
      const notJson = await post('{"project": churn', tokenA);
      assertEquals(notJson.status, 400);
      assertMatch((await notJson.json()).error, /not valid JSON/);
      for (
        const [body, message] of [
          ["[]", /body: must be a JSON object/],
          ['{"features": {"spend": 1}}', /project: required/],
          ['{"project": "churn", "features": [1]}', /features: must be an object, got array/],
          ['{"project": "churn", "entity_key": 7}', /entity_key: must be a string, got number/],
          ['{"project": "churn", "feature": {}}', /unknown field "feature"/],
        ] as const
      ) {
        const res = await post(body, tokenA);
        assertEquals(res.status, 400, body);
        assertMatch((await res.json()).error, message);
      }
    });

    await t.step("a missing, forged or expired token is unauthorized (401), and nothing is scored", async () => {
      const before = await countPredictions(owner, tenantA);
      const body = JSON.stringify({ project: "churn", features: { spend: 1 } });
      for (
        const [token, message] of [
          [undefined, /missing bearer token/],
          [await sign(user(userA), "not the project's secret"), /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/],
          [await sign(user(userA), SECRET, "-1m"), /ERR_JWT_EXPIRED/],
        ] as const
      ) {
        const res = await post(body, token);
        assertEquals(res.status, 401);
        assertMatch((await res.json()).error, message);
      }
      assertEquals(await countPredictions(owner, tenantA), before);
    });

    await t.step("only POST is served (405)", async () => {
      const res = await fetch(url, { headers: { Authorization: `Bearer ${tokenA}` } });
      assertEquals(res.status, 405);
      await res.body?.cancel();
    });

    await t.step("the logged prediction is tenant A's: its members read it through RLS, B's do not", async () => {
      const res = await call({ project: "churn", features: { spend: 3 } });
      const { prediction_id } = await res.json();
      const seenBy = async (who: string) =>
        Number(
          (await asCaller(sql, user(who), (tx) =>
            tx`select count(*) as n from ml.predictions where id = ${prediction_id}::uuid`))[0].n,
        );
      assertEquals([await seenBy(viewerA), await seenBy(userB)], [1, 0]);
    });
  } finally {
    await server.shutdown();
    await sql.end();
    await owner.end();
  }
});
