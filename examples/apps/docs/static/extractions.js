// The extractions page: every document of this user, with its status live over the WebSocket.
import { createClient, watchJobs } from "/underway/assets/underway.js";
import { API, WS, el, errorText, overallPercent, statusLabel } from "./common.js";
import { knowName } from "./notify.js";

const client = createClient({ baseUrl: API });
const body = document.querySelector("#documents tbody");
const empty = document.querySelector("#empty");
const connection = document.querySelector("#connection");
/** @type {Map<string, {name: string, created: string}>} */
const documents = new Map();
let states = {};
let loading = null;

async function load() {
  const { jobs } = await client.list({ task: "extract", limit: 200 });
  for (const job of jobs) {
    documents.set(job.id, { name: job.args?.name ?? job.id, created: job.created_at });
    knowName(job.id, job.args?.name ?? job.id);
  }
  render();
}

function reload() {
  loading ??= load().finally(() => {
    loading = null;
  });
}

function outcomeOf(state) {
  if (state.status === "succeeded") return state.result?.title ?? "";
  if (state.status === "failed" || state.status === "cancelled") return errorText(state.error);
  const progress = state.progress;
  return progress?.step ? `step ${progress.step}/${progress.steps}: ${progress.message}` : "";
}

function render() {
  const ids = [...documents.keys()].sort((a, b) => documents.get(b).created.localeCompare(documents.get(a).created));
  const rows = ids.map((id) => {
    const state = states[id];
    const row = el("tr");
    row.dataset.job = id;
    const status = statusLabel(state?.status);
    row.dataset.status = status;
    const bar = el("progress");
    bar.max = 100;
    bar.value = overallPercent(state);
    const outcome = el("td", state ? outcomeOf(state) : "", "outcome");
    if (state?.status === "failed") outcome.classList.add("error");
    row.append(el("td", documents.get(id).name, "name"), el("td", status, "status"), el("td"), outcome);
    row.children[2].append(bar, el("span", ` ${overallPercent(state)}%`, "percent"));
    return row;
  });
  body.replaceChildren(...rows);
  empty.hidden = rows.length > 0;
}

watchJobs(
  { task: "extract" },
  {
    ...WS,
    onJobs(next) {
      states = next;
      if (Object.keys(next).some((id) => !documents.has(id))) reload(); // uploaded elsewhere
      render();
    },
    onConnection(connected) {
      connection.hidden = connected;
    },
  },
);
reload();
