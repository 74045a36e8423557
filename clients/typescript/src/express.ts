// An Express middleware that authenticates each request with keyward and
// answers a denial with the status, code and message keyward chose for
// the product. Imported as `@keyward/client/express` (Express is an
// optional peer dependency).
import type { NextFunction, Request, RequestHandler, Response } from "express";

import { type Denial, type KeywardClient, type Key, type RateLimitStatus, isDenied } from "./index";

export interface KeywardAuthOptions {
  /** The scopes the route needs (fixed, or from the request). Default: none. */
  scopes?: string[] | ((request: Request) => string[]);
  /** Where the key is. Default: the `Authorization` header (`Bearer <key>` or bare). */
  credential?: (request: Request) => string | undefined;
  /**
   * The end client's address, for keyward's failed-attempt bans (believed
   * only from a trusted caller). Default: `request.ip`.
   */
  clientIp?: (request: Request) => string | undefined;
  /** The body of a denial. Default: `{ error: { code, message } }`. */
  deniedBody?: (denial: Denial) => unknown;
}

/** What the middleware leaves in `response.locals.keyward` for the handler. */
export interface KeywardLocals {
  key: Key;
  rateLimit?: RateLimitStatus;
}

/**
 * Authenticates every request. Allowed: `response.locals.keyward` holds the
 * key and the handler runs. Denied: the denial's HTTP status and body, with
 * `Retry-After` when keyward says when to retry. An RPC error (keyward
 * unreachable, a malformed scope name) goes to `next(error)`: Express
 * answers 500, so the route fails closed.
 */
export function keywardAuth(client: KeywardClient, options: KeywardAuthOptions = {}): RequestHandler {
  const scopesOf =
    typeof options.scopes === "function" ? options.scopes : () => (options.scopes as string[] | undefined) ?? [];
  const credentialOf = options.credential ?? ((request: Request) => request.get("authorization"));
  const clientIpOf = options.clientIp ?? ((request: Request) => request.ip);
  const bodyOf = options.deniedBody ?? ((denial: Denial) => ({ error: { code: denial.code, message: denial.message } }));

  return (request: Request, response: Response, next: NextFunction) => {
    client
      .authenticate({
        credential: credentialOf(request) ?? "",
        requiredScopes: scopesOf(request),
        clientIp: clientIpOf(request) ?? "",
      })
      .then((answer) => {
        if (isDenied(answer)) {
          if (answer.denial.retryAfterMs) {
            response.set("Retry-After", String(Math.ceil(answer.denial.retryAfterMs / 1000)));
          }
          response.status(answer.denial.httpStatus || 401).json(bodyOf(answer.denial));
          return;
        }
        const locals: KeywardLocals = { key: answer.key, rateLimit: answer.rateLimit };
        response.locals.keyward = locals;
        next();
      })
      .catch(next);
  };
}
