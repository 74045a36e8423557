// The package against a real keyward: the whole flow a Node.js service
// meets (create, authenticate, scope denial, unknown scope, revoke, watch),
// every friction point of issue 20, and a watch that resumes across a
// server restart.
import { strict as assert } from "node:assert";
import { after, before, test } from "node:test";

import {
  type Key,
  KeywardClient,
  KeywardError,
  type RevocationEvent,
  isDenied,
  isUnauthenticated,
} from "../src/index";
import { KeywardServer, freshDatabase } from "./keyward_server";

let server: KeywardServer;
let client: KeywardClient;

before(async () => {
  server = await KeywardServer.start(freshDatabase());
  client = new KeywardClient(server.address);
});

after(async () => {
  client.close();
  await server.stop();
});

/** Waits for `check` to hold, polling; fails after `timeoutMs`. */
async function eventually(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("create, authenticate, scope denial, revoke", async () => {
  const expiresAt = new Date(Date.now() + 3_600_000);
  const created = await client.createKey({
    accountId: "acct_42",
    name: "portfolio bot",
    scopes: ["portfolio:read", "traders:write"],
    expiresAt,
  });
  assert.match(created.secret, /^cc_[0-9a-f]{64}$/);
  assert.equal(created.key.accountId, "acct_42");
  assert.ok(created.key.createdAt instanceof Date);
  assert.equal(created.key.expiresAt?.getTime(), expiresAt.getTime(), "a Date goes in and comes out");
  assert.equal(typeof created.revision, "bigint");

  const allowed = await client.authenticate({
    credential: `Bearer ${created.secret}`,
    requiredScopes: ["traders:read"],
  });
  assert.equal(allowed.allowed, true);
  assert.ok(!isDenied(allowed));
  assert.equal(allowed.key.id, created.key.id);
  assert.deepEqual(allowed.key.effectiveScopes, ["portfolio:read", "traders:read", "traders:write"]);

  const lacking = await client.authenticate({ credential: created.secret, requiredScopes: ["orders:read"] });
  assert.equal(lacking.allowed, false, "`allowed` is present and false on a denial");
  assert.ok(isDenied(lacking, "INSUFFICIENT_SCOPE"));
  assert.equal(lacking.denial.reason, "INSUFFICIENT_SCOPE", "a string enum, not 6");
  assert.equal(lacking.denial.httpStatus, 403);
  assert.equal(lacking.denial.requiredScope, "orders:read");
  assert.equal(lacking.key?.id, created.key.id);

  const revoked = await client.revokeKey({ accountId: "acct_42", keyId: created.key.id });
  assert.ok(revoked.key.revokedAt instanceof Date);
  assert.ok(revoked.revision > created.revision);
  const after = await client.authenticate({ credential: `Bearer ${created.secret}` });
  assert.ok(isDenied(after, "REVOKED"));
  assert.ok(isUnauthenticated(after));
  assert.equal(after.denial.httpStatus, 401);
  assert.equal(after.key, undefined);
});

test("a scope the catalog does not know is a denial naming it, not an exception", async () => {
  const { secret, key } = await client.createKey({ accountId: "acct_1", name: "k", scopes: ["orders:read"] });
  const answer = await client.authenticate({ credential: secret, requiredScopes: ["orders:read", "orders:refund"] });
  assert.ok(isDenied(answer, "INSUFFICIENT_SCOPE"));
  assert.equal(answer.denial.requiredScope, "orders:refund");
  const checked = await client.checkScope({ keyId: key.id, scopes: ["orders:refund", "orders:read"] });
  assert.equal(checked.allowed, false);
  assert.deepEqual(checked.missingScopes, ["orders:refund"]);
});

test("a key without scopes or preset holds only the auto-granted scopes", async () => {
  const { key, secret } = await client.createKey({ accountId: "acct_1", name: "identity only" });
  assert.deepEqual(key.scopes, []);
  assert.deepEqual(key.effectiveScopes, [], "the default catalog auto-grants nothing");
  assert.equal((await client.authenticate({ credential: secret })).allowed, true);
  assert.ok(isDenied(await client.authenticate({ credential: secret, requiredScopes: ["orders:read"] })));
});

test("RPC errors are KeywardErrors naming the field", async () => {
  const missing = await client.createKey({ accountId: "", name: "k" }).catch((e) => e);
  assert.ok(missing instanceof KeywardError);
  assert.equal(missing.codeName, "INVALID_ARGUMENT");
  assert.equal(missing.field, "account_id");

  const past = await client.createKey({ accountId: "acct_1", name: "k", expiresAt: new Date(0) }).catch((e) => e);
  assert.ok(past instanceof KeywardError);
  assert.equal(past.field, "expires_at");
  assert.match(past.message, /got 1970-01-01T00:00:00Z/, "the message quotes what was sent");

  const iso = await client.createKey({ accountId: "acct_1", name: "k", expiresAt: "2001-02-03T04:05:06Z" }).catch((e) => e);
  assert.match(iso.message, /got 2001-02-03T04:05:06Z/, "an ISO string is a date too");
  await assert.rejects(client.createKey({ accountId: "acct_1", name: "k", expiresAt: "next tuesday" }), TypeError);

  const badName = await client.authenticate({ credential: "x", requiredScopes: ["Not A Scope"] }).catch((e) => e);
  assert.ok(badName instanceof KeywardError);
  assert.equal(badName.field, "required_scopes[0]");
  assert.equal((await client.listKeys({ accountId: "acct_1", includeRevoked: true })).keys.length, 2, "nothing written");
});

test("updateKey builds its mask from the fields given", async () => {
  const { key, secret } = await client.createKey({ accountId: "acct_up", name: "before", scopes: ["orders:read"] });
  const updated = await client.updateKey({ accountId: "acct_up", keyId: key.id, scopes: ["orders:write"] });
  assert.equal(updated.key.name, "before", "the name was not in the mask");
  assert.deepEqual(updated.key.scopes, ["orders:write"]);
  assert.equal((await client.authenticate({ credential: secret, requiredScopes: ["orders:write"] })).allowed, true);
});

test("rotateKey keeps the old key for its grace period", async () => {
  const created = await client.createKey({ accountId: "acct_rot", name: "rotating", scopes: ["orders:read"] });
  const rotated = await client.rotateKey({ accountId: "acct_rot", keyId: created.key.id, gracePeriodMs: 3_600_000 });
  assert.equal(rotated.key.rotatedFrom, created.key.id);
  assert.ok(rotated.previous.expiresAt instanceof Date, "the old key now expires");
  assert.equal((await client.authenticate({ credential: created.secret })).allowed, true);
  assert.equal((await client.authenticate({ credential: rotated.secret })).allowed, true);
});

test("watchRevocations: a checkpoint, events, lag, and close() without a crash", async () => {
  const { key } = await client.createKey({ accountId: "acct_w", name: "watched" });
  const watch = client.watchRevocations({ checkpointIntervalMs: 200 });
  const events: RevocationEvent[] = [];
  const done = (async () => {
    for await (const event of watch) events.push(event);
  })();
  await eventually("the first checkpoint", () => events.length > 0);
  assert.equal(events[0].kind, "checkpoint");
  assert.equal(typeof events[0].seq, "bigint", "a seq, also on the first checkpoint");
  assert.ok(watch.lagMs !== undefined && watch.lagMs < 10_000);

  await client.revokeKey({ accountId: "acct_w", keyId: key.id });
  await eventually("the revocation", () => events.some((e) => e.kind === "revoked"));
  const revoked = events.find((e) => e.kind === "revoked")!;
  assert.equal(revoked.keyId, key.id);
  assert.equal(revoked.accountId, "acct_w");
  assert.ok(revoked.at instanceof Date);
  assert.equal(watch.position >= revoked.seq, true);

  watch.close();
  await done; // ends the iteration: no unhandled CANCELLED error
});

test("an AbortSignal ends a watch", async () => {
  const abort = new AbortController();
  const watch = client.watchRevocations({ signal: abort.signal });
  const seen: string[] = [];
  const done = (async () => {
    for await (const event of watch) {
      seen.push(event.kind);
      abort.abort();
    }
  })();
  await done;
  assert.deepEqual(seen, ["checkpoint"]);
});

test("a watch resumes after its server restarts, missing nothing", async () => {
  // A server of its own: this test stops it.
  const database = freshDatabase();
  let own = await KeywardServer.start(database);
  const address = own.address;
  const ownClient = new KeywardClient(address);
  const keys: Key[] = [];
  for (let i = 0; i < 3; i++) {
    keys.push((await ownClient.createKey({ accountId: "acct_r", name: `k${i}` })).key);
  }
  const watch = ownClient.watchRevocations({ minBackoffMs: 50, maxBackoffMs: 200 });
  const events: RevocationEvent[] = [];
  const done = (async () => {
    for await (const event of watch) events.push(event);
  })();
  await eventually("the first checkpoint", () => events.length > 0);
  await ownClient.revokeKey({ accountId: "acct_r", keyId: keys[0].id });
  await eventually("the first revocation", () => events.some((e) => e.keyId === keys[0].id));

  // Down: the stream ends UNAVAILABLE with the position in its trailers.
  await own.stop();
  // While this server is down, another one on the same database revokes a
  // key: only a resume from the watch's position (not "start now") sees it.
  const other = await KeywardServer.start(database);
  const otherClient = new KeywardClient(other.address);
  await otherClient.revokeKey({ accountId: "acct_r", keyId: keys[1].id });
  otherClient.close();
  await other.stop();
  // Back on the same port.
  own = await KeywardServer.start(database, Number(address.split(":")[1]));
  await eventually("the revocation made while it was down", () => events.some((e) => e.keyId === keys[1].id), 20_000);
  await ownClient.revokeKey({ accountId: "acct_r", keyId: keys[2].id });

  await eventually("every revocation", () => keys.every((k) => events.some((e) => e.keyId === k.id)), 20_000);
  assert.ok(watch.reconnects >= 1, "it reconnected");
  const revocations = events.filter((e) => e.kind === "revoked");
  assert.deepEqual(
    revocations.map((e) => e.keyId),
    keys.map((k) => k.id),
    "each once, in order",
  );
  const seqs = events.filter((e) => e.kind !== "checkpoint").map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => (a < b ? -1 : 1)), "in sequence order");

  watch.close();
  await done;
  ownClient.close();
  await own.stop();
});
