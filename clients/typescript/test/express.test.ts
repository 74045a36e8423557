// The Express middleware in front of a real keyward: the denial's status
// and body, the key for the handler, and failing closed.
import { strict as assert } from "node:assert";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import express from "express";

import { KeywardClient } from "../src/index";
import { type KeywardLocals, keywardAuth } from "../src/express";
import { KeywardServer, freshDatabase } from "./keyward_server";

let server: KeywardServer;
let client: KeywardClient;
let base: string;
let http: import("node:http").Server;

before(async () => {
  server = await KeywardServer.start(freshDatabase());
  client = new KeywardClient(server.address);
  const app = express();
  app.get("/orders", keywardAuth(client, { scopes: ["orders:read"] }), (_request, response) => {
    const { key } = response.locals.keyward as KeywardLocals;
    response.json({ account: key.accountId });
  });
  // A keyward nobody listens on: the route must fail closed.
  const unreachable = new KeywardClient("127.0.0.1:1", { deadlineMs: 2_000 });
  app.get("/down", keywardAuth(unreachable), (_request, response) => {
    response.json({ ok: true });
  });
  // Express's own error handler would print the (expected) error.
  app.use((_error: unknown, _request: express.Request, response: express.Response, _next: express.NextFunction) => {
    response.status(500).json({ error: { code: "internal", message: "authentication is unavailable" } });
  });
  http = app.listen(0, "127.0.0.1");
  await new Promise((resolve) => http.once("listening", resolve));
  base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
});

after(async () => {
  http.close();
  client.close();
  await server.stop();
});

test("denials become the product's status and body; an allowed key reaches the handler", async () => {
  const { secret } = await client.createKey({ accountId: "acct_7", name: "web", scopes: ["orders:read"] });
  const { secret: other } = await client.createKey({ accountId: "acct_7", name: "web", scopes: ["portfolio:read"] });

  const none = await fetch(`${base}/orders`);
  assert.equal(none.status, 401);
  assert.deepEqual(await none.json(), { error: { code: "unauthorized", message: "Invalid or missing API key." } });

  const lacking = await fetch(`${base}/orders`, { headers: { authorization: `Bearer ${other}` } });
  assert.equal(lacking.status, 403);
  assert.equal(((await lacking.json()) as { error: { code: string } }).error.code, "forbidden");

  const allowed = await fetch(`${base}/orders`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(allowed.status, 200);
  assert.deepEqual(await allowed.json(), { account: "acct_7" });
});

test("keyward unreachable: the route fails closed", async () => {
  const down = await fetch(`${base}/down`, { headers: { authorization: "Bearer cc_x" } });
  assert.equal(down.status, 500);
});
