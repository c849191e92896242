// @ts-check
/**
 * React hooks of underway: `useJob(id, opts)`, `useBatch(id, opts)`, `useJobs(filter, opts)`.
 *
 * For bundlers (Vite, webpack, Next.js…), which resolve the bare name `react`:
 *
 *   import { useJob } from "underway/react";
 *   function Progress({ id }) {
 *     const { job, progress, status, error, connected } = useJob(id, { token: getToken });
 *     ...
 *   }
 *
 * Pages without a bundler cannot import `react` by name: they load React their own way and
 * build the hooks from the core module, which never imports React:
 *
 *   import { createHooks } from "/underway/underway.js";
 *   const { useJob, useBatch, useJobs } = createHooks(React);
 *
 * Each hook reads a shared store (`jobStore`, `batchStore`, `jobsStore` of underway.js) through
 * `useSyncExternalStore`: components watching the same target share one connection, the last
 * unmount closes it (after a second, so StrictMode's double mount does not reconnect), `enabled:
 * false` (or no id) gives an idle snapshot, and a token function may be a new one on every
 * render: the store takes the newest without reconnecting.
 */
import * as React from "react";
import { createHooks } from "./underway.js";

export { createHooks };
export const { useJob, useBatch, useJobs } = createHooks(React);
