// The README's quick start, run as it is against a real server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { startServer } from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

test("the README's quick start runs", async () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const code = /## Quick start[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(code, "no quick start in the README");
  const run = promisify(execFile);
  // run from js/: `import "underway"` is the package itself (its exports)
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", code], {
    cwd: new URL("..", import.meta.url),
    env: { ...process.env, UNDERWAY_API: server.baseUrl },
    timeout: 20000,
  });
  const lines = stdout.trim().split("\n");
  assert.equal(lines.at(-1), "ended: succeeded");
  assert.ok(lines.includes("running 100"), stdout);
});
