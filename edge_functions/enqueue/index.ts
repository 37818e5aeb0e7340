/**
 * The `enqueue` edge function: queue a job for the caller's tenant (see handler.ts).
 * Environment: SUPABASE_DB_URL, and SUPABASE_JWT_SECRET / PGMLOPS_JWT_SECRET or SUPABASE_JWKS.
 */

import { connect, verifierFromEnv } from "../_shared/caller.ts";
import { enqueueHandler } from "./handler.ts";

Deno.serve(enqueueHandler(connect(), verifierFromEnv()));
