/**
 * `POST /functions/v1/feedback`: record the realized outcome of logged predictions through
 * `ml.record_feedback`, or `ml.record_feedback_bulk` for an array, as the caller.
 *
 * Body: one outcome `{"prediction_id": "<uuid ml.predict returned>", "label": "yes", "source":
 * "crm"}` (source optional) answered `{"feedback_id": 42}`; or an array of them, recorded all
 * or nothing, answered `{"recorded": n}`. Recording again for the same prediction and source
 * replaces the label. The label must fit the project's task (a class the model knows, a number,
 * true/false or -1/1): checked in SQL, so every client gets the same rules; in an array the
 * error names the failing element (`feedback[3].label: ...`).
 *
 * Status: 200 recorded; 400 a body that is not such an object or array, a prediction_id that is
 * not a uuid, a missing label; 401 missing or invalid token; 403 not a writing member of the
 * tenant (42501); 404 no such prediction in the caller's tenant (P0002: another tenant's
 * predictions are not found); 413 more than 10,000 elements (54000); 422 a label or source
 * breaking the rules, a shadow arm's prediction, the same prediction and source twice in an
 * array (22023), with the SQL API's message.
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

const FIELDS: Record<string, FieldType> = { prediction_id: "string", label: "any", source: "string" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The request handler, over a database and a token verifier (tests pass their own). */
export function feedbackHandler(sql: postgres.Sql, verify: Verifier): (req: Request) => Promise<Response> {
  return postEndpoint(verify, async (claims, body) => {
    if (Array.isArray(body)) {
      // Every element is checked in SQL, which names the failing one by its position.
      const rows = await asCaller(
        sql,
        claims,
        (tx) => tx`select ml.record_feedback_bulk(${tx.json(body as postgres.JSONValue)}) as recorded`,
      );
      return json(200, { recorded: Number(rows[0].recorded) });
    }
    const shape = 'a JSON object {"prediction_id", "label", "source"} or an array of them';
    const outcome = requestObject(body, FIELDS, ["prediction_id"], shape);
    if (!UUID.test(outcome.prediction_id as string)) {
      throw new HttpError(400, "prediction_id: must be a uuid (the prediction_id ml.predict returned)");
    }
    if (outcome.label === undefined) throw new HttpError(400, "label: required, the realized outcome");
    const rows = await asCaller(
      sql,
      claims,
      (tx) =>
        tx`select ml.record_feedback(${outcome.prediction_id as string}::uuid,
                                     ${tx.json(outcome.label as postgres.JSONValue)}::jsonb,
                                     ${(outcome.source ?? null) as string | null}::text) as feedback_id`,
    );
    return json(200, { feedback_id: Number(rows[0].feedback_id) });
  });
}
