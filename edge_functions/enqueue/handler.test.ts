/**
 * The enqueue function against a real pgmlops database, over HTTP on a loopback port.
 *
 * Needs SUPABASE_DB_URL (a migrated pgmlops database; its user may `set role`, as Supabase's
 * `postgres` may) and SUPABASE_JWT_SECRET. tests/test_edge_functions.py provides both.
 * Run: `deno task test` in edge_functions/.
 */

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert/strict";
import postgres from "postgres";
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import { asCaller, type Claims, connect, jwksVerifier, verifierFromEnv } from "../_shared/caller.ts";
import { enqueueHandler } from "./handler.ts";

const SECRET = Deno.env.get("SUPABASE_JWT_SECRET");
const DB_URL = Deno.env.get("SUPABASE_DB_URL");
if (!SECRET || !DB_URL) {
  throw new Error("set SUPABASE_DB_URL and SUPABASE_JWT_SECRET (tests/test_edge_functions.py does)");
}

function sign(claims: JWTPayload, secret = SECRET!, expiresIn = "1h"): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setIssuedAt().setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret));
}

function user(sub: string, extra: JWTPayload = {}): JWTPayload {
  return { sub, role: "authenticated", aud: "authenticated", ...extra };
}

Deno.test("enqueue", async (t) => {
  const owner = postgres(DB_URL, { max: 1, onnotice: () => {} }); // the database owner: sets up and checks the truth
  const sql = connect(DB_URL);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    enqueueHandler(sql, verifierFromEnv()),
  );
  const url = `http://127.0.0.1:${server.addr.port}/`;
  const post = (body: string, token?: string) =>
    fetch(url, {
      method: "POST",
      body,
      headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    });
  const countJobs = async (tenant: string) =>
    Number((await owner`select count(*) as n from ml.jobs where tenant_id = ${tenant}::uuid`)[0].n);

  const [userA, userB, viewerA] = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const [{ id: tenantA }] = await owner`select ml.create_tenant('edge A', ${userA}::uuid) as id`;
  const [{ id: tenantB }] = await owner`select ml.create_tenant('edge B', ${userB}::uuid) as id`;
  await owner`select ml.add_tenant_member(${tenantA}::uuid, ${viewerA}::uuid, 'viewer')`;
  const tokenA = await sign(user(userA));

  try {
    await t.step("a member's call queues the job in their tenant, visible to that tenant only", async () => {
      const res = await post(JSON.stringify({ kind: "echo", payload: { message: "from the edge" } }), tokenA);
      assertEquals(res.status, 200, await res.clone().text());
      const { job_id } = await res.json();
      assert(Number.isInteger(job_id) && job_id > 0, `job_id ${job_id}`);
      const [job] = await owner`select tenant_id, kind, payload, created_by, status from ml.jobs where id = ${job_id}`;
      assertEquals([job.tenant_id, job.kind, job.payload, job.created_by, job.status], [
        tenantA,
        "echo",
        { message: "from the edge" },
        userA,
        "queued",
      ]);
      const seenBy = async (claims: Claims) =>
        Number((await asCaller(sql, claims, (tx) => tx`select count(*) as n from ml.jobs where id = ${job_id}`))[0].n);
      assertEquals(await seenBy(user(userA) as Claims), 1);
      assertEquals(await seenBy(user(userB) as Claims), 0);
    });

    await t.step("a token naming another tenant cannot enqueue there (403, 42501)", async () => {
      const before = await countJobs(tenantB);
      const token = await sign(user(userA, { app_metadata: { tenant_id: tenantB } }));
      const res = await post(JSON.stringify({ kind: "echo", payload: {} }), token);
      assertEquals(res.status, 403);
      const body = await res.json();
      assertEquals(body.code, "42501");
      assertMatch(body.error, /is not a member of tenant/);
      assertEquals(await countJobs(tenantB), before);
    });

    await t.step("a viewer may read but not enqueue (403)", async () => {
      const res = await post(JSON.stringify({ kind: "echo" }), await sign(user(viewerA)));
      assertEquals(res.status, 403);
      assertMatch((await res.json()).error, /viewer .* may read but not write/);
    });

    await t.step("a service token acts for the tenant its app_metadata names", async () => {
      const token = await sign({ role: "service_role", app_metadata: { tenant_id: tenantB } });
      const res = await post(JSON.stringify({ kind: "echo", priority: 5 }), token);
      assertEquals(res.status, 200, await res.clone().text());
      const [job] = await owner`select tenant_id, priority from ml.jobs where id = ${(await res.json()).job_id}`;
      assertEquals([job.tenant_id, job.priority], [tenantB, 5]);
    });

    await t.step("a payload breaking the kind's schema is refused with the SQL API's message (422)", async () => {
      const before = await countJobs(tenantA);
      const res = await post(JSON.stringify({ kind: "echo", payload: { sleep_ms: "soon" } }), tokenA);
      assertEquals(res.status, 422);
      const body = await res.json();
      assertEquals(body.code, "22023");
      assertMatch(body.error, /payload: \$\.sleep_ms: must be of type integer/);
      assertEquals(await countJobs(tenantA), before);
    });

    await t.step("an unknown kind is refused (422) and the hint lists the known ones", async () => {
      const res = await post(JSON.stringify({ kind: "no_such_kind" }), tokenA);
      assertEquals(res.status, 422);
      const body = await res.json();
      assertMatch(body.error, /unknown job kind 'no_such_kind'/);
      assertMatch(body.hint, /echo/);
    });

    await t.step("a body that is not JSON is a bad request (400)", async () => {
      const res = await post("{kind: echo", tokenA);
      assertEquals(res.status, 400);
      assertMatch((await res.json()).error, /not valid JSON/);
    });

    await t.step("a body of the wrong shape is a bad request (400)", async () => {
      for (
        const body of [
          "[]",
          '{"payload": {}}',
          '{"kind": "echo", "payloads": {}}',
          '{"kind": "echo", "priority": "high"}',
        ]
      ) {
        const res = await post(body, tokenA);
        assertEquals(res.status, 400, body);
        await res.body?.cancel();
      }
    });

    await t.step("no token is unauthorized (401), and nothing is queued", async () => {
      const before = await countJobs(tenantA);
      const res = await post(JSON.stringify({ kind: "echo" }));
      assertEquals(res.status, 401);
      assertMatch((await res.json()).error, /missing bearer token/);
      assertEquals(await countJobs(tenantA), before);
    });

    await t.step("a token signed with another secret is unauthorized (401)", async () => {
      const res = await post(JSON.stringify({ kind: "echo" }), await sign(user(userA), "not the project's secret"));
      assertEquals(res.status, 401);
      assertMatch((await res.json()).error, /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/);
    });

    await t.step("an expired token is unauthorized (401)", async () => {
      const res = await post(JSON.stringify({ kind: "echo" }), await sign(user(userA), SECRET, "-1m"));
      assertEquals(res.status, 401);
      assertMatch((await res.json()).error, /ERR_JWT_EXPIRED/);
    });

    await t.step("a token naming a database role that is not an API role is unauthorized (401)", async () => {
      const res = await post(JSON.stringify({ kind: "echo" }), await sign({ sub: userA, role: "postgres" }));
      assertEquals(res.status, 401);
      assertMatch((await res.json()).error, /role "postgres" is not one of/);
    });

    await t.step("only POST is served (405); a CORS preflight is answered", async () => {
      const get = await fetch(url, { headers: { Authorization: `Bearer ${tokenA}` } });
      assertEquals(get.status, 405);
      await get.body?.cancel();
      const preflight = await fetch(url, { method: "OPTIONS" });
      assertEquals(preflight.status, 204);
      assertMatch(preflight.headers.get("access-control-allow-headers") ?? "", /authorization/);
      await preflight.body?.cancel();
    });

    await t.step("the caller's role and claims do not outlive the request's transaction", async () => {
      // Every pooled connection: after requests, none is left in the caller's role or claims.
      const rows = await Promise.all(
        Array.from(
          { length: 4 },
          () => sql`select current_user as role, coalesce(current_setting('request.jwt.claims', true), '') as claims`,
        ),
      );
      for (const [row] of rows) assertEquals([row.role, row.claims], [new URL(DB_URL).username, ""]);
    });
  } finally {
    await server.shutdown();
    await sql.end();
    await owner.end();
  }
});

Deno.test("tokens signed with the project's asymmetric keys verify against its JWKS", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" }] });
  const verify = jwksVerifier(jwks);
  const token = await new SignJWT({ sub: "u", role: "authenticated" }).setProtectedHeader({ alg: "ES256", kid: "k1" })
    .setExpirationTime("1h").sign(privateKey);
  assertEquals((await verify(token)).sub, "u");
  const other = (await generateKeyPair("ES256")).privateKey;
  const forged = await new SignJWT({ sub: "u", role: "authenticated" }).setProtectedHeader({ alg: "ES256", kid: "k1" })
    .setExpirationTime("1h").sign(other);
  let refused = false;
  await verify(forged).catch(() => (refused = true));
  assert(refused, "a token signed with another key was accepted");
});
