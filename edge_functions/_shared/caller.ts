/**
 * Acting for the caller of an edge function exactly as PostgREST acts for an API request.
 *
 * A function verifies the caller's JWT ({@link authenticate}), then runs its SQL in one
 * transaction that switches to the role the token names and puts the token's claims in
 * `request.jwt.claims` ({@link asCaller}). Row-level security, `auth.uid()` and the `ml.*`
 * functions then see the caller a Supabase client calling over RPC would be, so a function can
 * do nothing the caller could not do through the API. Errors become HTTP responses by SQLSTATE
 * ({@link errorResponse}).
 */

import postgres from "postgres";
import { createLocalJWKSet, type JWTPayload, jwtVerify } from "jose";

/** The database roles an API token may name (Supabase's: anon key, user sessions, service key). */
export const API_ROLES = ["anon", "authenticated", "service_role"] as const;
export type ApiRole = (typeof API_ROLES)[number];

/** The verified claims of a token; `role` is always one of {@link API_ROLES}. */
export type Claims = JWTPayload & { role: ApiRole };

/** Checks a token's signature and lifetime; returns its claims or throws. */
export type Verifier = (token: string) => Promise<JWTPayload>;

/** A response already decided: thrown by request handling, turned into JSON by {@link errorResponse}. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export const corsHeaders: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "POST, OPTIONS",
};

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, "Content-Type": "application/json", ...headers },
  });
}

// -- tokens ---------------------------------------------------------------------------------------

/** Tokens signed with the project's JWT secret (HS256, Supabase's legacy signing key). */
export function hs256Verifier(secret: string): Verifier {
  const key = new TextEncoder().encode(secret);
  return async (token) => (await jwtVerify(token, key, { algorithms: ["HS256"] })).payload;
}

/** Tokens signed with one of the project's asymmetric signing keys (a JSON Web Key Set). */
export function jwksVerifier(jwks: string): Verifier {
  const keys = createLocalJWKSet(JSON.parse(jwks));
  return async (token) => (await jwtVerify(token, keys, { algorithms: ["ES256", "RS256", "EdDSA"] })).payload;
}

/**
 * The verifier of this deployment: `SUPABASE_JWT_SECRET` (or `PGMLOPS_JWT_SECRET`, for hosted
 * projects, where names starting with SUPABASE_ are reserved) for HS256 tokens, else
 * `SUPABASE_JWKS` for asymmetric ones. Throws when neither is set: no function may run
 * without checking its callers.
 */
export function verifierFromEnv(env: { get(name: string): string | undefined } = Deno.env): Verifier {
  const secret = env.get("SUPABASE_JWT_SECRET") || env.get("PGMLOPS_JWT_SECRET");
  if (secret) return hs256Verifier(secret);
  const jwks = env.get("SUPABASE_JWKS");
  if (jwks) return jwksVerifier(jwks);
  throw new Error("set SUPABASE_JWT_SECRET (or PGMLOPS_JWT_SECRET) or SUPABASE_JWKS to verify callers' tokens");
}

/**
 * The claims of the request's bearer token. Throws {@link HttpError} 401 when the token is
 * missing, malformed, badly signed, expired, or names a role that is not an API role.
 */
export async function authenticate(req: Request, verify: Verifier): Promise<Claims> {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
  if (!match) throw new HttpError(401, "missing bearer token: send Authorization: Bearer <JWT>");
  let claims: JWTPayload;
  try {
    claims = await verify(match[1]);
  } catch (err) {
    // jose's error codes say what was wrong (ERR_JWS_SIGNATURE_VERIFICATION_FAILED,
    // ERR_JWT_EXPIRED, ...) without echoing the token.
    const code = (err as { code?: string }).code ?? "ERR_JWT_INVALID";
    throw new HttpError(401, `invalid token (${code})`);
  }
  const role = claims.role;
  if (typeof role !== "string" || !(API_ROLES as readonly string[]).includes(role)) {
    throw new HttpError(401, `invalid token: role ${JSON.stringify(role)} is not one of ${API_ROLES.join(", ")}`);
  }
  return claims as Claims;
}

// -- requests -------------------------------------------------------------------------------------

/** The request's body parsed as JSON; {@link HttpError} 400 when it is not JSON. */
export async function readJson(req: Request): Promise<unknown> {
  try {
    return JSON.parse(await req.text());
  } catch (err) {
    throw new HttpError(400, `body: not valid JSON (${(err as Error).message})`);
  }
}

/** What a field of a request object may hold (`null` is always allowed; `any` takes everything). */
export type FieldType = "string" | "number" | "object" | "any";

/**
 * `body` as a JSON object whose fields are among `fields`, each of its type (or null); `required`
 * ones present and not null. Throws {@link HttpError} 400 naming the field. Shape only: the
 * values are the SQL API's to judge.
 */
export function requestObject(
  body: unknown,
  fields: Record<string, FieldType>,
  required: string[],
  shape: string,
): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, `body: must be ${shape}`);
  }
  const object = body as Record<string, unknown>;
  for (const [name, value] of Object.entries(object)) {
    const type = fields[name];
    if (!type) {
      throw new HttpError(
        400,
        `body: unknown field ${JSON.stringify(name)} (known: ${Object.keys(fields).join(", ")})`,
      );
    }
    const actual = Array.isArray(value) ? "array" : typeof value;
    if (type !== "any" && value !== null && actual !== type) {
      throw new HttpError(400, `${name}: must be ${type === "object" ? "an" : "a"} ${type}, got ${actual}`);
    }
  }
  for (const name of required) {
    if (object[name] === undefined || object[name] === null) throw new HttpError(400, `${name}: required`);
  }
  return object;
}

/**
 * A POST endpoint: answers CORS preflights (204) and other methods (405), authenticates the
 * caller (401 first, before the body is read), parses the body as JSON (400) and hands both to
 * `handle`; whatever it throws becomes a response through {@link errorResponse}.
 */
export function postEndpoint(
  verify: Verifier,
  handle: (claims: Claims, body: unknown) => Promise<Response>,
): (req: Request) => Promise<Response> {
  return async (req) => {
    if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: corsHeaders });
    if (req.method !== "POST") return json(405, { error: "use POST" }, { Allow: "POST, OPTIONS" });
    try {
      const claims = await authenticate(req, verify);
      return await handle(claims, await readJson(req));
    } catch (err) {
      return errorResponse(err);
    }
  };
}

// -- the database ---------------------------------------------------------------------------------

/** The project's database (`SUPABASE_DB_URL`). Prepared statements off: a pooler may sit between. */
export function connect(url = Deno.env.get("SUPABASE_DB_URL")): postgres.Sql {
  if (!url) throw new Error("SUPABASE_DB_URL is not set");
  return postgres(url, {
    prepare: false,
    max: 4,
    idle_timeout: 30,
    connection: { application_name: "pgmlops edge function" },
  });
}

/**
 * Runs `work` in one transaction as the caller, as PostgREST runs a request: `set local role`
 * to the token's role and the claims in `request.jwt.claims`, both for this transaction only,
 * so a pooled connection never carries a caller into the next request.
 */
export function asCaller<T>(
  sql: postgres.Sql,
  claims: Claims,
  work: (tx: postgres.TransactionSql) => Promise<T>,
): Promise<T> {
  // The role is one of API_ROLES (checked by authenticate), never text from the request.
  if (!(API_ROLES as readonly string[]).includes(claims.role)) throw new HttpError(401, "invalid token role");
  return sql.begin(async (tx) => {
    await tx.unsafe(`set local role ${claims.role}`);
    await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
    return await work(tx);
  }) as Promise<T>;
}

// -- errors ---------------------------------------------------------------------------------------

/**
 * The response for an error: an {@link HttpError} as it says; SQL errors by SQLSTATE, with the
 * message and hint the SQL API wrote for the caller (22xxx invalid input 422, 42501 not allowed
 * 403, P0002 not found 404, 0A000 / 55000 not possible in the current state 409, 54000 too large
 * 413); anything else 500 without details (logged).
 */
export function errorResponse(err: unknown): Response {
  if (err instanceof HttpError) return json(err.status, { error: err.message });
  if (err instanceof postgres.PostgresError) {
    const status = statusForSqlstate(err.code);
    if (status !== 500) {
      return json(status, { error: err.message, code: err.code, ...(err.hint ? { hint: err.hint } : {}) });
    }
  }
  console.error(err);
  return json(500, { error: "internal error" });
}

export function statusForSqlstate(code: string): number {
  if (code.startsWith("22")) return 422;
  if (code === "42501") return 403;
  if (code === "P0002") return 404;
  // 0A000: what was asked is not supported for this object as it is now (ml.predict on a version
  // only workers can score: the hint names ml.score); 55000: an object not in the state the call
  // needs. Both are the target's state, not the server lacking a feature (501) nor the input (422).
  if (code === "0A000" || code === "55000") return 409;
  if (code === "54000") return 413;
  return 500;
}
