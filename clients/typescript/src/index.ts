// @keyward/client: keyward's KeyService for Node.js on @grpc/grpc-js.
//
// What it does for the caller, over the bare generated client:
// - camelCase requests and answers, `Date` for every timestamp (in and
//   out), `bigint` for sequences and revisions, string enums;
// - a denial is a value (`isDenied(answer)`), an RPC error a thrown
//   `KeywardError` naming the field;
// - `watchRevocations()` resumes by itself (from `keyward-resume-after-seq`
//   or the last sequence seen), survives server restarts, ends cleanly on
//   `close()` or an AbortSignal and exposes how far behind it is.
import * as grpc from "@grpc/grpc-js";

import { keywardPackage, type KeyServiceClient } from "./loader";
import type { Key__Output } from "./generated/keyward/v1/Key";
import type { Denial__Output } from "./generated/keyward/v1/Denial";
import type { RateLimitStatus__Output } from "./generated/keyward/v1/RateLimitStatus";
import type { RevocationEvent__Output } from "./generated/keyward/v1/RevocationEvent";
import type { Timestamp, Timestamp__Output } from "./generated/google/protobuf/Timestamp";

export { LOADER_OPTIONS, PROTO_ROOT, keywardPackage } from "./loader";
export type { KeyServiceClient } from "./loader";

/** Why keyward denied a request (`Denial.Reason` of keyward.proto). */
export type DenialReason = Denial__Output["reason"];

export interface Denial {
  /** Exact, for the caller's logs. */
  reason: DenialReason;
  /** What the product shows its own user: code, message and HTTP status. */
  code: string;
  message: string;
  httpStatus: number;
  /** For INSUFFICIENT_SCOPE: the first missing scope. */
  requiredScope?: string;
  /** For RATE_LIMITED and TOO_MANY_FAILED_ATTEMPTS. */
  retryAfterMs?: number;
}

export interface RateLimit {
  requests: number;
  perSeconds: number;
}

export interface RateLimitStatus {
  limit: number;
  remaining: number;
  resetMs: number;
}

/** A key as its owner sees it (never the secret). */
export interface Key {
  id: string;
  accountId: string;
  name: string;
  start: string;
  scopes: string[];
  effectiveScopes: string[];
  createdAt: Date;
  expiresAt?: Date;
  revokedAt?: Date;
  lastUsedAt?: Date;
  rateLimit?: RateLimit;
  rotatedFrom?: string;
  metadata: Record<string, string>;
  allowedNetworks: string[];
}

export interface Allowed {
  allowed: true;
  key: Key;
  rateLimit?: RateLimitStatus;
  /** The answer may be kept until WatchRevocations reports the key. */
  cacheable: boolean;
}

export interface Denied {
  allowed: false;
  denial: Denial;
  /** Set when the credential named a live key (a missing scope, a spent budget). */
  key?: Key;
  rateLimit?: RateLimitStatus;
}

export type AuthenticateResult = Allowed | Denied;

export interface CheckScopeResult {
  allowed: boolean;
  /** When the key was identified: the asked scopes it lacks, in order. */
  missingScopes: string[];
  denial?: Denial;
}

/** `true` when `answer` is a denial (optionally: for one of `reasons`). */
export function isDenied(
  answer: { allowed: boolean; denial?: Denial },
  ...reasons: DenialReason[]
): answer is Denied & { denial: Denial } {
  if (answer.allowed || answer.denial === undefined) return false;
  return reasons.length === 0 || reasons.includes(answer.denial.reason);
}

/** Denials that mean "no valid key" (HTTP 401 in most products). */
export function isUnauthenticated(answer: { allowed: boolean; denial?: Denial }): boolean {
  return isDenied(answer, "MISSING_CREDENTIAL", "MALFORMED_CREDENTIAL", "UNKNOWN_KEY", "REVOKED", "EXPIRED");
}

/** An RPC error: the request was wrong, or keyward (or the network) failed. */
export class KeywardError extends Error {
  /** The gRPC status code (`grpc.status.INVALID_ARGUMENT` ...). */
  readonly code: grpc.status;
  /** Its name: "INVALID_ARGUMENT", "UNAVAILABLE" ... */
  readonly codeName: string;
  /** For INVALID_ARGUMENT: the field the message names (`required_scopes[1]`). */
  readonly field?: string;
  readonly metadata?: grpc.Metadata;

  constructor(error: grpc.ServiceError) {
    super(error.details || error.message);
    this.name = "KeywardError";
    this.code = error.code;
    this.codeName = grpc.status[error.code] ?? String(error.code);
    this.metadata = error.metadata;
    if (error.code === grpc.status.INVALID_ARGUMENT) {
      const colon = this.message.indexOf(":");
      if (colon > 0) this.field = this.message.slice(0, colon);
    }
  }
}

/** A point in time as keyward.proto's Timestamp; refuses what is not one. */
export function toTimestamp(field: string, at: Date | string | number): Timestamp {
  const date = at instanceof Date ? at : new Date(at);
  const millis = date.getTime();
  if (Number.isNaN(millis)) {
    throw new TypeError(`${field}: not a date: ${String(at)}`);
  }
  const seconds = Math.floor(millis / 1000);
  return { seconds: String(seconds), nanos: (millis - seconds * 1000) * 1_000_000 };
}

/** An answer's Timestamp as a Date (undefined when unset). */
export function fromTimestamp(at: Timestamp__Output | null | undefined): Date | undefined {
  if (at === null || at === undefined) return undefined;
  return new Date(Number(at.seconds) * 1000 + Math.floor(at.nanos / 1_000_000));
}

function key(raw: Key__Output): Key {
  return {
    id: raw.id,
    accountId: raw.accountId,
    name: raw.name,
    start: raw.start,
    scopes: raw.scopes,
    effectiveScopes: raw.effectiveScopes,
    createdAt: fromTimestamp(raw.createdAt) ?? new Date(0),
    expiresAt: fromTimestamp(raw.expiresAt),
    revokedAt: fromTimestamp(raw.revokedAt),
    lastUsedAt: fromTimestamp(raw.lastUsedAt),
    rateLimit: raw.rateLimit ? { requests: raw.rateLimit.requests, perSeconds: raw.rateLimit.perSeconds } : undefined,
    rotatedFrom: raw.rotatedFrom || undefined,
    metadata: raw.metadata,
    allowedNetworks: raw.allowedNetworks,
  };
}

function denial(raw: Denial__Output): Denial {
  return {
    reason: raw.reason,
    code: raw.code,
    message: raw.message,
    httpStatus: raw.httpStatus,
    requiredScope: raw.requiredScope || undefined,
    retryAfterMs: Number(raw.retryAfterMs) || undefined,
  };
}

function rateLimitStatus(raw: RateLimitStatus__Output | null): RateLimitStatus | undefined {
  return raw ? { limit: raw.limit, remaining: raw.remaining, resetMs: Number(raw.resetMs) } : undefined;
}

export interface ClientOptions {
  /** Default: plaintext (`grpc.credentials.createInsecure()`). */
  credentials?: grpc.ChannelCredentials;
  /** A service token, sent as `authorization: Bearer <token>`. */
  serviceToken?: string;
  /** Per-call deadline for unary RPCs, in milliseconds (default 10 s). */
  deadlineMs?: number;
  /** Channel options passed to grpc-js. */
  channelOptions?: grpc.ChannelOptions;
}

type Revision = bigint | number | string;

/** A typed client of keyward.v1.KeyService. */
export class KeywardClient {
  /** The generated grpc-js client, for RPCs this class does not wrap. */
  readonly raw: KeyServiceClient;
  private readonly serviceToken?: string;
  private readonly deadlineMs: number;

  /** `address` is `host:port` (`127.0.0.1:50051`). */
  constructor(address: string, options: ClientOptions = {}) {
    const KeyService = keywardPackage().keyward.v1.KeyService;
    this.raw = new KeyService(
      address,
      options.credentials ?? grpc.credentials.createInsecure(),
      options.channelOptions,
    );
    this.serviceToken = options.serviceToken;
    this.deadlineMs = options.deadlineMs ?? 10_000;
  }

  /** Call metadata: the service token, when there is one. */
  metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.serviceToken !== undefined) metadata.set("authorization", `Bearer ${this.serviceToken}`);
    return metadata;
  }

  private unary<Response>(method: string, request: object): Promise<Response> {
    const deadline = new Date(Date.now() + this.deadlineMs);
    const call = (this.raw as unknown as Record<string, Function>)[method].bind(this.raw);
    return new Promise((resolve, reject) => {
      call(request, this.metadata(), { deadline }, (error: grpc.ServiceError | null, response: Response) => {
        if (error) reject(new KeywardError(error));
        else resolve(response);
      });
    });
  }

  /** Who does `credential` belong to, and may it use `requiredScopes`? A denial is a value. */
  async authenticate(request: {
    credential: string;
    requiredScopes?: string[];
    clientIp?: string;
    minRevision?: Revision;
  }): Promise<AuthenticateResult> {
    const raw = await this.unary<import("./generated/keyward/v1/AuthenticateResponse").AuthenticateResponse__Output>(
      "Authenticate",
      {
        credential: request.credential,
        requiredScopes: request.requiredScopes ?? [],
        clientIp: request.clientIp ?? "",
        minRevision: String(request.minRevision ?? 0),
      },
    );
    if (raw.allowed && raw.key) {
      return { allowed: true, key: key(raw.key), rateLimit: rateLimitStatus(raw.rateLimit), cacheable: raw.cacheable };
    }
    return {
      allowed: false,
      denial: raw.denial ? denial(raw.denial) : { reason: "REASON_UNSPECIFIED", code: "", message: "", httpStatus: 401 },
      key: raw.key ? key(raw.key) : undefined,
      rateLimit: rateLimitStatus(raw.rateLimit),
    };
  }

  /** Does a key (by `keyId` or by `credential`) hold `scopes`? */
  async checkScope(request: {
    keyId?: string;
    credential?: string;
    scopes: string[];
    clientIp?: string;
    minRevision?: Revision;
  }): Promise<CheckScopeResult> {
    const raw = await this.unary<import("./generated/keyward/v1/CheckScopeResponse").CheckScopeResponse__Output>(
      "CheckScope",
      {
        keyId: request.keyId ?? "",
        credential: request.credential ?? "",
        scopes: request.scopes,
        clientIp: request.clientIp ?? "",
        minRevision: String(request.minRevision ?? 0),
      },
    );
    return { allowed: raw.allowed, missingScopes: raw.missingScopes, denial: raw.denial ? denial(raw.denial) : undefined };
  }

  /**
   * Creates a key; `secret` is shown here only. Without `scopes` or
   * `preset` the key holds only the catalog's auto-granted scopes.
   */
  async createKey(request: {
    accountId: string;
    name: string;
    scopes?: string[];
    preset?: string;
    expiresAt?: Date | string | number;
    rateLimit?: RateLimit;
    metadata?: Record<string, string>;
    allowedNetworks?: string[];
  }): Promise<{ key: Key; secret: string; revision: bigint }> {
    const raw = await this.unary<import("./generated/keyward/v1/CreateKeyResponse").CreateKeyResponse__Output>(
      "CreateKey",
      {
        accountId: request.accountId,
        name: request.name,
        scopes: request.scopes ?? [],
        preset: request.preset ?? "",
        expiresAt: request.expiresAt === undefined ? null : toTimestamp("expiresAt", request.expiresAt),
        rateLimit: request.rateLimit ?? null,
        metadata: request.metadata ?? {},
        allowedNetworks: request.allowedNetworks ?? [],
      },
    );
    return { key: key(raw.key!), secret: raw.secret, revision: BigInt(raw.revision) };
  }

  async revokeKey(request: { accountId: string; keyId: string }): Promise<{ key: Key; revision: bigint }> {
    const raw = await this.unary<import("./generated/keyward/v1/RevokeKeyResponse").RevokeKeyResponse__Output>(
      "RevokeKey",
      request,
    );
    return { key: key(raw.key!), revision: BigInt(raw.revision) };
  }

  async getKey(request: { accountId: string; keyId: string }): Promise<Key> {
    const raw = await this.unary<import("./generated/keyward/v1/GetKeyResponse").GetKeyResponse__Output>(
      "GetKey",
      request,
    );
    return key(raw.key!);
  }

  async listKeys(request: {
    accountId: string;
    includeRevoked?: boolean;
    pageSize?: number;
    pageToken?: string;
  }): Promise<{ keys: Key[]; nextPageToken?: string }> {
    const raw = await this.unary<import("./generated/keyward/v1/ListKeysResponse").ListKeysResponse__Output>(
      "ListKeys",
      {
        accountId: request.accountId,
        includeRevoked: request.includeRevoked ?? false,
        pageSize: request.pageSize ?? 0,
        pageToken: request.pageToken ?? "",
      },
    );
    return { keys: raw.keys.map(key), nextPageToken: raw.nextPageToken || undefined };
  }

  /**
   * Changes what is given (the update mask is built from the fields that
   * are not `undefined`; `rateLimit: null` returns the key to the default).
   */
  async updateKey(request: {
    accountId: string;
    keyId: string;
    name?: string;
    scopes?: string[];
    rateLimit?: RateLimit | null;
    metadata?: Record<string, string>;
    allowedNetworks?: string[];
  }): Promise<{ key: Key; revision: bigint }> {
    const paths: string[] = [];
    if (request.name !== undefined) paths.push("name");
    if (request.scopes !== undefined) paths.push("scopes");
    if (request.rateLimit !== undefined) paths.push("rate_limit");
    if (request.metadata !== undefined) paths.push("metadata");
    if (request.allowedNetworks !== undefined) paths.push("allowed_networks");
    const raw = await this.unary<import("./generated/keyward/v1/UpdateKeyResponse").UpdateKeyResponse__Output>(
      "UpdateKey",
      {
        accountId: request.accountId,
        keyId: request.keyId,
        name: request.name ?? "",
        scopes: request.scopes ?? [],
        rateLimit: request.rateLimit ?? null,
        metadata: request.metadata ?? {},
        allowedNetworks: request.allowedNetworks ?? [],
        updateMask: { paths },
      },
    );
    return { key: key(raw.key!), revision: BigInt(raw.revision) };
  }

  /** Replaces a key; the old one keeps working for `gracePeriodMs` (0: revoked now). */
  async rotateKey(request: {
    accountId: string;
    keyId: string;
    gracePeriodMs?: number;
  }): Promise<{ key: Key; secret: string; previous: Key; revision: bigint }> {
    const grace = request.gracePeriodMs ?? 0;
    const seconds = Math.floor(grace / 1000);
    const raw = await this.unary<import("./generated/keyward/v1/RotateKeyResponse").RotateKeyResponse__Output>(
      "RotateKey",
      {
        accountId: request.accountId,
        keyId: request.keyId,
        gracePeriod: { seconds: String(seconds), nanos: (grace - seconds * 1000) * 1_000_000 },
      },
    );
    return { key: key(raw.key!), secret: raw.secret, previous: key(raw.previous!), revision: BigInt(raw.revision) };
  }

  /** The deployment's scope catalog, presets and key prefix. */
  async listScopes(): Promise<import("./generated/keyward/v1/ListScopesResponse").ListScopesResponse__Output> {
    return this.unary("ListScopes", {});
  }

  /** An auto-resuming WatchRevocations stream; see {@link RevocationWatch}. */
  watchRevocations(options: WatchOptions = {}): RevocationWatch {
    return new RevocationWatch(this, options);
  }

  close(): void {
    this.raw.close();
  }
}

/** The trailing metadata entry that names the `after_seq` to resume with. */
export const RESUME_AFTER_SEQ = "keyward-resume-after-seq";

export interface RevocationEvent {
  seq: bigint;
  /**
   * "revoked", "scopes_changed", ... or "checkpoint" (no key; `seq` is the
   * position reached and `at` when the server last proved itself
   * current), or "resync": this client's own marker that the server could
   * not resume (OUT_OF_RANGE): drop everything kept from earlier events.
   * Drop a key's cached answers on any event about it, kinds added later
   * included.
   */
  kind: string;
  keyId?: string;
  accountId?: string;
  at?: Date;
}

export interface WatchOptions {
  /** Resume after this sequence (default 0: start now). */
  afterSeq?: Revision;
  /** Only this account's events. */
  accountId?: string;
  /** Ask for a checkpoint at least this often (100 to 3,600,000 ms). */
  checkpointIntervalMs?: number;
  /** Ends the watch, as `close()` does. */
  signal?: AbortSignal;
  /** First wait before reconnecting, doubled up to `maxBackoffMs` (defaults 100 and 5,000). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/** Codes after which reconnecting cannot help: the request itself is refused. */
const FATAL = new Set<grpc.status>([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.UNIMPLEMENTED,
]);

/**
 * WatchRevocations that resumes by itself. Iterate it with `for await`;
 * it reconnects after UNAVAILABLE, RESOURCE_EXHAUSTED or a lost
 * connection from the position the server names (trailing metadata
 * `keyward-resume-after-seq`) or the last sequence received, yields a
 * `resync` event and starts over after OUT_OF_RANGE, and throws a
 * {@link KeywardError} only for errors a retry cannot fix. `close()` (or
 * the AbortSignal) ends the iteration; a cancelled call never surfaces as
 * an unhandled 'error' event.
 */
export class RevocationWatch implements AsyncIterable<RevocationEvent> {
  /** The last sequence received (what a reconnect resumes after). */
  position: bigint;
  /** When the server last proved itself current (the latest checkpoint's `at`). */
  provenAt?: Date;
  /** How many times the stream was reopened. */
  reconnects = 0;
  private closed = false;
  private call?: grpc.ClientReadableStream<RevocationEvent__Output>;
  private readonly wake = new AbortController();

  constructor(
    private readonly client: KeywardClient,
    private readonly options: WatchOptions,
  ) {
    this.position = BigInt(options.afterSeq ?? 0);
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
    if (options.signal?.aborted) this.close();
  }

  /**
   * How far behind this consumer's view may be, in milliseconds: the age of
   * the server's last proof that everything up to `position` was delivered.
   * Undefined before the first checkpoint.
   */
  get lagMs(): number | undefined {
    return this.provenAt === undefined ? undefined : Math.max(0, Date.now() - this.provenAt.getTime());
  }

  close(): void {
    this.closed = true;
    this.wake.abort();
    this.call?.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<RevocationEvent> {
    const minBackoff = this.options.minBackoffMs ?? 100;
    const maxBackoff = this.options.maxBackoffMs ?? 5_000;
    let backoff = minBackoff;
    let first = true;
    try {
      while (!this.closed) {
        if (!first) this.reconnects += 1;
        first = false;
        const call = this.client.raw.WatchRevocations(
          {
            afterSeq: this.position.toString(),
            accountId: this.options.accountId ?? "",
            checkpointIntervalMs: this.options.checkpointIntervalMs ?? 0,
          },
          this.client.metadata(),
        );
        // A cancelled or failed call emits 'error'; with no listener Node
        // would crash the process. The iteration below sees it as a throw.
        call.on("error", () => {});
        this.call = call;
        let ending: grpc.ServiceError | undefined;
        try {
          for await (const raw of call as AsyncIterable<RevocationEvent__Output>) {
            backoff = minBackoff;
            const event: RevocationEvent = {
              seq: BigInt(raw.seq),
              kind: raw.kind,
              keyId: raw.keyId || undefined,
              accountId: raw.accountId || undefined,
              at: fromTimestamp(raw.at),
            };
            this.position = event.seq;
            if (event.kind === "checkpoint") this.provenAt = event.at;
            yield event;
            if (this.closed) return;
          }
        } catch (error) {
          ending = error as grpc.ServiceError;
        }
        if (this.closed) return;
        if (ending !== undefined && FATAL.has(ending.code)) throw new KeywardError(ending);
        if (ending?.code === grpc.status.OUT_OF_RANGE) {
          this.position = 0n;
          this.provenAt = undefined;
          yield { seq: 0n, kind: "resync" };
          continue;
        }
        const named = ending?.metadata?.get(RESUME_AFTER_SEQ)[0];
        if (named !== undefined) this.position = BigInt(named.toString());
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, maxBackoff);
      }
    } finally {
      this.closed = true;
      this.call?.cancel();
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.wake.signal.aborted) return resolve();
      const timer = setTimeout(resolve, ms);
      this.wake.signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
  }
}
