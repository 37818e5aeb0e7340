/**
 * `POST /functions/v1/enqueue`: queue a job for the caller's tenant through `ml.enqueue`.
 *
 * Body: `{"kind": "echo", "payload": {...}, "priority": 0, "run_after": "<timestamptz>",
 * "max_attempts": 3}`; only `kind` is required. Answers `{"job_id": 42}`.
 *
 * The tenant is the one `ml.enqueue` resolves from the caller's claims, as for an RPC call: the
 * token's `app_metadata.tenant_id`, else the user's only tenant; the user must be a writing
 * member of it. The payload is checked against the kind's JSON schema in SQL, so this function
 * and every other client get the same rules.
 *
 * Status: 200 queued; 400 a body that is not a JSON object of the fields above; 401 missing or
 * invalid token; 403 not a writing member (42501); 404 no such tenant (P0002); 413 payload over
 * 1 MB (54000); 422 invalid kind, payload or options (22xxx), with the SQL API's message.
 */

import type postgres from "postgres";
import {
  asCaller,
  type FieldType,
  HttpError,
  json,
  postEndpoint,
  requestObject,
  type Verifier,
} from "../_shared/caller.ts";

interface EnqueueRequest {
  kind: string;
  payload: unknown;
  priority: number | null;
  run_after: string | null;
  max_attempts: number | null;
}

const FIELDS: Record<string, FieldType> = {
  kind: "string",
  payload: "any",
  priority: "number",
  run_after: "string",
  max_attempts: "number",
};

/** The request's body, checked for shape only (the values are the SQL API's to judge). */
function readRequest(body: unknown): EnqueueRequest {
  const fields = requestObject(body, FIELDS, [], "a JSON object with kind and payload");
  if (typeof fields.kind !== "string") throw new HttpError(400, 'kind: required, a job kind such as "echo"');
  return {
    kind: fields.kind,
    payload: fields.payload === undefined ? {} : fields.payload,
    priority: (fields.priority as number | undefined) ?? null,
    run_after: (fields.run_after as string | undefined) ?? null,
    max_attempts: (fields.max_attempts as number | undefined) ?? null,
  };
}

/** The request handler, over a database and a token verifier (tests pass their own). */
export function enqueueHandler(sql: postgres.Sql, verify: Verifier): (req: Request) => Promise<Response> {
  return postEndpoint(verify, async (claims, body) => {
    const job = readRequest(body);
    const rows = await asCaller(
      sql,
      claims,
      (tx) =>
        tx`select ml.enqueue(${job.kind}::text, ${tx.json(job.payload as postgres.JSONValue)},
                           coalesce(${job.priority}::int, 0), coalesce(${job.run_after}::timestamptz, now()),
                           ${job.max_attempts}::int) as job_id`,
    );
    return json(200, { job_id: Number(rows[0].job_id) });
  });
}
