/**
 * The `predict` edge function: score one entity with the project's active deployment (see handler.ts).
 * Environment: SUPABASE_DB_URL, and SUPABASE_JWT_SECRET / PGMLOPS_JWT_SECRET or SUPABASE_JWKS.
 */

import { connect, verifierFromEnv } from "../_shared/caller.ts";
import { predictHandler } from "./handler.ts";

Deno.serve(predictHandler(connect(), verifierFromEnv()));
