// Loaded by every page: a toast when one of this user's extractions ends, on whatever page the
// user is. It watches the user's jobs over the page's one WebSocket; the jobs that were running
// when the user left a page are remembered in sessionStorage, so one that ended during the
// navigation still gets its toast on the next page.
import { watchJobs } from "/underway/assets/underway.js";
import { WS, errorText, toast } from "./common.js";

const KEY = "docs.unfinished";
const names = new Map();

function remembered() {
  try {
    return new Set(JSON.parse(sessionStorage.getItem(KEY) ?? "[]"));
  } catch {
    return new Set();
  }
}

const unfinished = remembered();

function save() {
  sessionStorage.setItem(KEY, JSON.stringify([...unfinished]));
}

/** The upload page tells the name of a document it just submitted. */
export function expect(jobId, name) {
  names.set(jobId, name);
  unfinished.add(jobId);
  save();
}

/** The list page tells the names it knows. */
export function knowName(jobId, name) {
  names.set(jobId, name);
}

watchJobs(
  { task: "extract" },
  {
    ...WS,
    onJobs(states) {
      for (const [id, state] of Object.entries(states)) {
        if (!state.ended) {
          unfinished.add(id);
        } else if (unfinished.has(id)) {
          unfinished.delete(id);
          const name = names.get(id) ?? "A document";
          if (state.status === "succeeded") toast(`${name}: extraction completed`, "succeeded");
          else toast(`${name}: extraction ${state.status}: ${errorText(state.error)}`, "failed");
        }
      }
      save();
    },
  },
);
