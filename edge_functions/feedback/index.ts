/**
 * The `feedback` edge function: record realized outcomes of logged predictions (see handler.ts).
 * Environment: SUPABASE_DB_URL, and SUPABASE_JWT_SECRET / PGMLOPS_JWT_SECRET or SUPABASE_JWKS.
 */

import { connect, verifierFromEnv } from "../_shared/caller.ts";
import { feedbackHandler } from "./handler.ts";

Deno.serve(feedbackHandler(connect(), verifierFromEnv()));
