/**
 * The feedback function against a real pgmlops database, over HTTP on a loopback port: outcomes
 * of predictions logged by ml.predict (one, then many all or nothing), and every way a call is
 * refused.
 *
 * Run: `deno task test` in edge_functions/ (tests/test_edge_functions.py sets the environment).
 */

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import type postgres from "postgres";
import { asCaller, connect, verifierFromEnv } from "../_shared/caller.ts";
import { asService, ownerConnection, SECRET, serve, servedProject, sign, user } from "../_shared/testing.ts";
import { predictHandler } from "../predict/handler.ts";
import { feedbackHandler } from "./handler.ts";

Deno.test("feedback", async (t) => {
  const owner = ownerConnection();
  const sql = connect();
  const { server, url, post } = serve(feedbackHandler(sql, verifierFromEnv()));
  const predictor = serve(predictHandler(sql, verifierFromEnv()));

  const [userA, userB, viewerA] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const [{ id: tenantA }] = await owner`select ml.create_tenant('feedback A', ${userA}::uuid) as id`;
  const [{ id: tenantB }] = await owner`select ml.create_tenant('feedback B', ${userB}::uuid) as id`;
  await owner`select ml.add_tenant_member(${tenantA}::uuid, ${viewerA}::uuid, 'viewer')`;
  await servedProject(owner, tenantA, userA, "churn");
  await servedProject(owner, tenantB, userB, "churn");
  const tokenA = await sign(user(userA));
  const call = (body: unknown, token = tokenA) => post(JSON.stringify(body), token);
  /** A prediction logged by ml.predict for a service caller of `tenant`; returns its id. */
  const predict = async (tenant: string, spend = 10.5): Promise<string> =>
    (await asService(
      owner,
      tenant,
      (tx) => tx`select ml.predict('churn', ${tx.json({ spend })}, 'c1') ->> 'prediction_id' as id`,
    ))[0].id;
  const labels = async (tenant: string) =>
    await owner`select prediction_id::text, source, label from ml.feedback where tenant_id = ${tenant}::uuid
                order by prediction_id, source nulls first` as postgres.Row[];

  try {
    await t.step(
      "predicted through the predict function, recorded through this one, joined for monitoring",
      async () => {
        const scored = await predictor.post(JSON.stringify({ project: "churn", features: { spend: 10.5 } }), tokenA);
        assertEquals(scored.status, 200, await scored.clone().text());
        const { prediction_id, prediction } = await scored.json();
        const res = await call({ prediction_id, label: 0, source: "crm" });
        assertEquals(res.status, 200, await res.clone().text());
        const { feedback_id } = await res.json();
        assert(Number.isInteger(feedback_id) && feedback_id > 0, `feedback_id ${feedback_id}`);
        const [row] = await owner`select tenant_id, prediction_id, label, source, recorded_by from ml.feedback
                                where id = ${feedback_id}`;
        assertEquals([row.tenant_id, row.prediction_id, row.label, row.source, row.recorded_by], [
          tenantA,
          prediction_id,
          0,
          "crm",
          userA,
        ]);
        // Monitoring reads the pair through RLS, as a viewer of tenant A; tenant B sees nothing.
        const outcome = (who: string) =>
          asCaller(sql, user(who), (tx) =>
            tx`select prediction, label, model, version, arm from ml.prediction_outcomes
             where prediction_id = ${prediction_id}::uuid`);
        const [seen] = await outcome(viewerA);
        assertEquals([seen.prediction, seen.label, seen.model, seen.version, seen.arm], [
          prediction,
          0,
          "churn",
          1,
          "main",
        ]);
        assertEquals((await outcome(userB)).length, 0);
      },
    );

    await t.step("recording again for the same source replaces the label", async () => {
      const prediction = await predict(tenantA);
      const first = await (await call({ prediction_id: prediction, label: 0, source: "crm" })).json();
      const again = await (await call({ prediction_id: prediction, label: 1, source: "crm" })).json();
      assertEquals(again.feedback_id, first.feedback_id);
      assertEquals((await labels(tenantA)).filter((r) => r.prediction_id === prediction).map((r) => r.label), [1]);
    });

    await t.step("an array is recorded all at once", async () => {
      const [p1, p2] = [await predict(tenantA), await predict(tenantA, 1)];
      const res = await call([{ prediction_id: p1, label: 1 }, { prediction_id: p2, label: 0, source: "survey" }]);
      assertEquals(res.status, 200, await res.clone().text());
      assertEquals(await res.json(), { recorded: 2 });
      const got = (await labels(tenantA)).filter((r) => r.prediction_id === p1 || r.prediction_id === p2);
      assertEquals(got.length, 2);
    });

    await t.step("an array with one bad element writes nothing and names the element (422)", async () => {
      const [p1, p2] = [await predict(tenantA), await predict(tenantA)];
      const before = await labels(tenantA);
      const res = await call([{ prediction_id: p1, label: 1 }, { prediction_id: p2, label: "churned" }]);
      assertEquals(res.status, 422);
      const body = await res.json();
      assertEquals(body.code, "22023");
      assertMatch(body.error, /^feedback\[1\]\.label: "churned" is not a class of the model/);
      assertEquals(await labels(tenantA), before);
    });

    await t.step("tenant A cannot label tenant B's prediction: not found (404), nothing written", async () => {
      const theirs = await predict(tenantB);
      const before = [await labels(tenantA), await labels(tenantB)];
      const single = await call({ prediction_id: theirs, label: 1 });
      assertEquals(single.status, 404);
      const body = await single.json();
      assertEquals(body.code, "P0002");
      assertMatch(body.error, new RegExp(`prediction ${theirs} does not exist`));
      const many = await call([{ prediction_id: await predict(tenantA), label: 1 }, {
        prediction_id: theirs,
        label: 1,
      }]);
      assertEquals(many.status, 404);
      assertMatch((await many.json()).error, /^feedback\[1\]\.prediction_id: prediction .* does not exist/);
      assertEquals([await labels(tenantA), await labels(tenantB)], before);
    });

    await t.step("a label that does not fit the task is invalid (422), with the rule", async () => {
      const res = await call({ prediction_id: await predict(tenantA), label: { churned: true } });
      assertEquals(res.status, 422);
      assertMatch((await res.json()).error, /^label: must be a class label \(a JSON string, number or boolean\)/);
      const unset = await call({ prediction_id: await predict(tenantA), label: null });
      assertEquals(unset.status, 422);
      assertMatch((await unset.json()).error, /^label: must not be null/);
    });

    await t.step("a viewer may not record feedback (403)", async () => {
      const res = await call({ prediction_id: await predict(tenantA), label: 1 }, await sign(user(viewerA)));
      assertEquals(res.status, 403);
      assertMatch((await res.json()).error, /viewer .* may read but not write/);
    });

    await t.step("more than 10,000 outcomes in one call is too large (413)", async () => {
      const p = await predict(tenantA);
      const res = await call(
        Array.from({ length: 10001 }, (_, i) => ({ prediction_id: p, label: 1, source: `s${i}` })),
      );
      assertEquals(res.status, 413);
      assertEquals((await res.json()).code, "54000");
    });

    await t.step("a body that is not JSON, or not of the request's shape, is a bad request (400)", async () => {
      const notJson = await post("[{prediction_id", tokenA);
      assertEquals(notJson.status, 400);
      assertMatch((await notJson.json()).error, /not valid JSON/);
      const p = await predict(tenantA);
      for (
        const [body, message] of [
          ['"yes"', /body: must be a JSON object .* or an array of them/],
          ['{"label": 1}', /prediction_id: required/],
          ['{"prediction_id": "c1", "label": 1}', /prediction_id: must be a uuid/],
          [`{"prediction_id": "${p}"}`, /label: required/],
          [`{"prediction_id": "${p}", "label": 1, "source": 3}`, /source: must be a string, got number/],
          [`{"prediction_id": "${p}", "label": 1, "sauce": "crm"}`, /unknown field "sauce"/],
        ] as const
      ) {
        const res = await post(body, tokenA);
        assertEquals(res.status, 400, body);
        assertMatch((await res.json()).error, message);
      }
    });

    await t.step("a missing, forged or expired token is unauthorized (401), and nothing is written", async () => {
      const p = await predict(tenantA);
      const before = await labels(tenantA);
      for (
        const [token, message] of [
          [undefined, /missing bearer token/],
          [await sign(user(userA), "not the project's secret"), /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/],
          [await sign(user(userA), SECRET, "-1m"), /ERR_JWT_EXPIRED/],
          [await sign({ sub: userA, role: "postgres" }), /role "postgres" is not one of/],
        ] as const
      ) {
        const res = await post(JSON.stringify({ prediction_id: p, label: 1 }), token);
        assertEquals(res.status, 401);
        assertMatch((await res.json()).error, message);
      }
      assertEquals(await labels(tenantA), before);
    });

    await t.step("only POST is served (405); a CORS preflight is answered", async () => {
      const get = await fetch(url, { headers: { Authorization: `Bearer ${tokenA}` } });
      assertEquals(get.status, 405);
      await get.body?.cancel();
      const preflight = await fetch(url, { method: "OPTIONS" });
      assertEquals(preflight.status, 204);
      await preflight.body?.cancel();
    });
  } finally {
    await predictor.server.shutdown();
    await server.shutdown();
    await sql.end();
    await owner.end();
  }
});
