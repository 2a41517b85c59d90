// The token page of docs/CLIENTS.md ("Signing in with a token") runs as it
// is written, against the token hub: it signs in, joins its rooms, one of
// them with a grant, and shows the sign-in again when the user is banned.

import {test} from "node:test";
import assert from "node:assert/strict";
import {readFile} from "node:fs/promises";
import {Client} from "../wshub.js";
import {control, tokenBase} from "./helpers.mjs";

// snippet returns the js block of the section of docs/CLIENTS.md under
// the heading head, without its import of wshub.js.
async function snippet(head) {
  const doc = await readFile(new URL("../../docs/CLIENTS.md", import.meta.url), "utf8");
  const start = doc.indexOf("\n" + head + "\n");
  assert.ok(start >= 0, `docs/CLIENTS.md has no ${head}`);
  const section = doc.slice(start + 1).split(/\n#{2,3} /)[0];
  const block = /\n```js\n([\s\S]*?)\n```\n/.exec(section);
  assert.ok(block, `no js block under ${head}`);
  const imp = `import {Client} from "/wshub/wshub.js";\n`;
  assert.ok(block[1].startsWith(imp), "the block does not import wshub.js as a page does");
  return block[1].slice(imp.length);
}

test("the token page of docs/CLIENTS.md", async (t) => {
  const code = await snippet("### Signing in with a token");
  // As in a page served by the token hub: URLs relative to it.
  globalThis.location = {href: new URL("/", tokenBase).href};
  const pageFetch = (path, options) => fetch(new URL(path, tokenBase), options);
  const signIns = [];
  const logged = [];
  const console = {log: (...a) => logged.push(a), warn: (...a) => logged.push(a)};
  const AsyncFunction = (async () => {}).constructor;
  const page = new AsyncFunction("Client", "fetch", "showSignIn", "console", code + "\nreturn hub;");
  const hub = await page(Client, pageFetch, (reason) => signIns.push(reason), console);
  t.after(() => hub.close());
  assert.equal(hub.state, "online");
  assert.deepEqual(hub.rooms, ["lobby", "vip"]);
  assert.deepEqual(logged, []);

  const out = new Promise((resolve) => hub.on("signedout", resolve));
  await control("POST", "/disconnect", {user: "guest", code: 4003, reason: "banned"});
  await out;
  assert.deepEqual(signIns, ["banned"]);
  assert.equal(hub.state, "signedout");
});
