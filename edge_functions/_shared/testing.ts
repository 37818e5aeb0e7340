/**
 * Helpers for the functions' `deno test` files (never imported by a function): tokens signed
 * with the test secret, a handler served on a loopback port, and a real served project (a
 * registered version compiled to SQL, approved and deployed) made through the SQL API.
 *
 * Needs SUPABASE_DB_URL (a migrated pgmlops database whose user may `set role`, as Supabase's
 * `postgres` may) and SUPABASE_JWT_SECRET; tests/test_edge_functions.py provides both.
 */

import postgres from "postgres";
import { type JWTPayload, SignJWT } from "jose";
import { asCaller, type Claims } from "./caller.ts";

export const SECRET = Deno.env.get("SUPABASE_JWT_SECRET")!;
export const DB_URL = Deno.env.get("SUPABASE_DB_URL")!;
if (!SECRET || !DB_URL) {
  throw new Error("set SUPABASE_DB_URL and SUPABASE_JWT_SECRET (tests/test_edge_functions.py does)");
}

export function sign(claims: JWTPayload, secret = SECRET, expiresIn = "1h"): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setIssuedAt().setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret));
}

/** The claims Supabase Auth gives a signed-in user. */
export function user(sub: string, extra: JWTPayload = {}): Claims {
  return { sub, role: "authenticated", aud: "authenticated", ...extra } as Claims;
}

/** A handler served on a loopback port, and a POST to it with an optional bearer token. */
export function serve(handler: (req: Request) => Promise<Response>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  const url = `http://127.0.0.1:${server.addr.port}/`;
  const post = (body: string, token?: string) =>
    fetch(url, {
      method: "POST",
      body,
      headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    });
  return { server, url, post };
}

/** The database owner: sets the world up and checks the truth, past RLS. */
export function ownerConnection(): postgres.Sql {
  return postgres(DB_URL, { max: 1, onnotice: () => {} });
}

/** Runs `work` in one transaction of the owner acting as a service caller for `tenant`. */
export function asService<T>(owner: postgres.Sql, tenant: string, work: (tx: postgres.TransactionSql) => Promise<T>) {
  return owner.begin(async (tx) => {
    await tx`select set_config('pgmlops.tenant_id', ${tenant}, true)`;
    return await work(tx);
  }) as Promise<T>;
}

// A logistic regression on one input, spend, as pgmlops.scoring.describe writes scikit-learn's
// fitted LogisticRegression: P(1) = sigmoid(0.697816651000343 * spend - 4.283542512790246).
const LOGISTIC = {
  format: 1,
  task: "classification",
  estimator_name: "LogisticRegression",
  inputs: { numeric: 1, categorical: 0 },
  features: [{ num: 1, ops: [] }],
  estimator: { kind: "linear", coef: [[0.697816651000343]], intercept: [-4.283542512790246] },
  output: { kind: "classification", labels: [0, 1], probability: "sigmoid", label: "gt0", decision: true },
};

/** The probability of class 1 the served model gives for `spend`. */
export function expectedProbability(spend: number): number {
  return 1 / (1 + Math.exp(-(0.697816651000343 * spend - 4.283542512790246)));
}

/**
 * A classification project of `tenant` (inputs: spend) with version 1 of its model `project`
 * registered by a service caller, approved by `reviewer` (a member who may approve) and, unless
 * `deploy` is false, deployed alone (arm "main"). `scoring` "compiled" installs the logistic
 * regression above; "worker" records it as scored by workers. Returns the version's id.
 */
export async function servedProject(
  owner: postgres.Sql,
  tenant: string,
  reviewer: string,
  project: string,
  { scoring = "compiled", deploy = true }: { scoring?: "compiled" | "worker"; deploy?: boolean } = {},
): Promise<string> {
  const signature = {
    inputs: [{ name: "spend", dtype: "float" }],
    outputs: [{ name: "label", dtype: "int" }],
    task: "classification",
    classes: [0, 1],
  };
  const version = await asService(owner, tenant, async (tx) => {
    const [{ id: projectId }] = await tx`select ml.create_project(${project}, 'classification', 'label') as id`;
    const [{ id: run }] = await tx`select ml.start_run(${projectId}::uuid, null, 'logistic_regression', '{}', '{}',
                                                       null, '{}') as id`;
    await tx`select ml.finish_run(${run}::uuid, 'succeeded', '{}', 1.0, 100, 0.1)`;
    const artifact = `artifact of ${run}`;
    const [{ v }] = await tx`select ml.register_model_version(${run}::uuid, ${project}, convert_to(${artifact}, 'UTF8'),
                               'skops', encode(sha256(convert_to(${artifact}, 'UTF8')), 'hex'),
                               ${tx.json(signature)}, null) as v`;
    const id = v.model_version_id as string;
    if (scoring === "compiled") {
      await tx`select ml.install_compiled_model(${id}::uuid, ${tx.json(LOGISTIC)})`;
    } else {
      await tx`select ml.record_worker_scoring(${id}::uuid, 'an SVM: scored by workers')`;
    }
    return id;
  });
  await asCaller(
    owner,
    user(reviewer, { app_metadata: { tenant_id: tenant } }),
    (tx) => tx`select ml.approve(${project}, 1, 'approved', 'edge function tests')`,
  );
  if (deploy) {
    await asService(
      owner,
      tenant,
      (tx) => tx`select ml.deploy(${project}, 'single', ${tx.json([{ arm: "main", model: project, version: 1 }])})`,
    );
  }
  return version;
}

/** How many predictions tenant `tenant` has logged. */
export async function countPredictions(owner: postgres.Sql, tenant: string): Promise<number> {
  return Number((await owner`select count(*) as n from ml.predictions where tenant_id = ${tenant}::uuid`)[0].n);
}
