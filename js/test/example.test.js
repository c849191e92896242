// The React example of docs/browser.md (examples/browser/report-progress.jsx), rendered in jsdom
// against a real server: its bar follows a job to the end.
import { cleanup, render, waitFor } from "@testing-library/react";
import { createElement } from "react";
import { afterAll, afterEach, beforeAll, expect, test } from "vitest";

import { ReportProgress } from "../../examples/browser/report-progress.jsx";
import { createClient } from "../underway.js";
import { startServer } from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;

beforeAll(async () => {
  server = await startServer();
});
afterAll(() => server?.stop());
afterEach(() => cleanup());

test("the docs' React component shows a job's progress until it succeeds", async () => {
  const client = createClient({ baseUrl: server.baseUrl });
  const job = await client.submit("steps", { count: 4, interval: 0.05 });
  const { container } = render(createElement(ReportProgress, { jobId: job.id, baseUrl: server.baseUrl }));
  const bar = () => /** @type {HTMLProgressElement} */ (container.querySelector("progress"));
  await waitFor(() => expect(bar().value).toBeGreaterThan(0), { timeout: 10000, interval: 10 });
  await waitFor(() => expect(container.textContent).toContain("(succeeded)"), { timeout: 10000 });
  expect(bar().value).toBe(100);
  expect(container.textContent).toContain("step 4");
});
