/**
 * `POST /functions/v1/predict`: score one entity with the project's active deployment through
 * `ml.predict`, as the caller.
 *
 * Body: `{"project": "churn", "features": {"spend": 10.5}, "entity_key": "c1"}`; only `project`
 * is required. Without `features`, `ml.predict` reads the entity's features from the online
 * store (then `entity_key` is needed). Answers what `ml.predict` returns: `{"prediction", "score"?,
 * "probabilities"?, "model", "version", "arm", "deployment_id", "prediction_id"}`, the call
 * logged in ml.predictions.
 *
 * The project is looked up in the tenant the caller acts for (the token's
 * `app_metadata.tenant_id`, else the user's only tenant), so another tenant's project is not
 * found. Features are checked in SQL (missing, extra or mistyped ones are named there), and a
 * failed call logs nothing.
 *
 * Status: 200 scored; 400 a body that is not a JSON object of the fields above; 401 missing or
 * invalid token; 403 not a member of the tenant (42501); 404 no such project, no active
 * deployment, no features for the entity (P0002); 409 a model only workers can score (0A000:
 * the hint points to ml.score); 422 invalid features or arguments (22xxx), with the SQL API's
 * message.
 */

import type postgres from "postgres";
import { asCaller, type FieldType, json, postEndpoint, requestObject, type Verifier } from "../_shared/caller.ts";

const FIELDS: Record<string, FieldType> = { project: "string", features: "object", entity_key: "string" };

/** The request handler, over a database and a token verifier (tests pass their own). */
export function predictHandler(sql: postgres.Sql, verify: Verifier): (req: Request) => Promise<Response> {
  return postEndpoint(verify, async (claims, body) => {
    const request = requestObject(body, FIELDS, ["project"], 'a JSON object {"project", "features", "entity_key"}');
    const features = (request.features ?? null) as postgres.JSONValue | null;
    const rows = await asCaller(
      sql,
      claims,
      (tx) =>
        tx`select ml.predict(${request.project as string}::text,
                             ${features === null ? null : tx.json(features)}::jsonb,
                             ${(request.entity_key ?? null) as string | null}::text) as result`,
    );
    return json(200, rows[0].result);
  });
}
