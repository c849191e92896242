// The chat page: messages go to the app's own POST /chat, which may start a job; the session's
// jobs are followed with underway.js by polling (transport "poll", on purpose) and shown in the
// bar at the bottom. Every string from a job is set as text, never as HTML.
import { createClient, jobState, watchJobs } from "/underway/assets/underway.js";

const BASE = "/underway/api";
const client = createClient({ baseUrl: BASE }); // the session cookie goes along (same origin)
const messages = document.querySelector("#messages");
const bar = document.querySelector("#job-list");
const form = document.querySelector("#composer");
const input = document.querySelector("#text");

/** @type {Map<string, any>} each job as the API returned it (task, args, created_at) */
const jobs = new Map();
/** @type {Map<string, Promise<void>>} jobs being fetched once (started from another tab) */
const fetching = new Map();
/** @type {Map<string, HTMLLIElement>} the bar's items */
const items = new Map();
/** @type {Map<string, string>} what each bar item shows now, to redraw only on a change */
const drawn = new Map();
/** @type {Set<string>} jobs whose result is in the chat */
const reported = new Set();
/** @type {Set<string>} "id key" of questions being answered */
const answering = new Set();

/** @param {"user"|"assistant"} role @param {string} text @param {{jobId?: string, kind?: string}} [extra] */
function say(role, text, extra = {}) {
  const li = document.createElement("li");
  li.className = `message ${role}${extra.kind ? ` ${extra.kind}` : ""}`;
  li.textContent = text;
  if (extra.jobId) li.dataset.jobId = extra.jobId;
  messages.append(li);
  li.scrollIntoView({ block: "nearest" });
}

/** What the user asked, from the job's arguments. */
function asked(job) {
  if (job.task === "book_meeting") return String(job.args?.request ?? "book a meeting");
  if (job.task === "summarise") return `summarise ${job.args?.text ?? ""}`.trim();
  return job.task;
}

function titleOf(id) {
  const job = jobs.get(id);
  if (!job) return "Job";
  if (job.task === "book_meeting") return "Booking a meeting";
  if (job.task === "summarise") return "Summarising";
  return String(job.task);
}

/** @param {any} state */
function report(state) {
  if (reported.has(state.id)) return;
  reported.add(state.id);
  if (state.status === "succeeded") {
    const reply = state.result && typeof state.result === "object" ? state.result.reply : state.result;
    say("assistant", String(reply ?? "Done."), { jobId: state.id, kind: "result" });
  } else {
    const why = state.error?.message ? `: ${state.error.message}` : ".";
    say("assistant", `${titleOf(state.id)} ${state.status}${why}`, { jobId: state.id, kind: "failed" });
  }
}

function statusText(state) {
  if (state.status === "waiting") return "waiting for you";
  const p = state.progress;
  if (state.status === "running" && p?.step && p?.steps) return `running · step ${p.step} of ${p.steps}`;
  return state.status ?? "…";
}

function percentOf(state) {
  const p = state.progress;
  if (!p) return 0;
  if (typeof p.percent === "number") return p.percent;
  return p.total ? (100 * (p.current ?? 0)) / p.total : 0;
}

/** @param {any} state */
function draw(state) {
  const id = state.id;
  const prompt = state.status === "waiting" ? state.prompt : null;
  const busy = prompt ? answering.has(`${id} ${prompt.key}`) : false;
  const look = JSON.stringify([state.status, percentOf(state), state.message, statusText(state), jobs.has(id), prompt, busy]);
  if (drawn.get(id) === look) return;
  drawn.set(id, look);
  let li = items.get(id);
  if (!li) {
    li = document.createElement("li");
    li.className = "job";
    li.dataset.jobId = id;
    items.set(id, li);
    bar.append(li);
  }
  li.dataset.status = state.status ?? "";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = titleOf(id);
  const status = document.createElement("span");
  status.className = "status";
  status.textContent = statusText(state);
  const progress = document.createElement("progress");
  progress.max = 100;
  progress.value = percentOf(state);
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = prompt ? String(prompt.message ?? "") : String(state.message ?? "");
  const parts = [title, status, progress, detail];
  if (prompt && Array.isArray(prompt.options)) {
    const options = document.createElement("div");
    options.className = "options";
    for (const option of prompt.options) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = typeof option === "string" ? option : JSON.stringify(option);
      button.disabled = busy;
      button.addEventListener("click", () => choose(state, prompt, option));
      options.append(button);
    }
    parts.push(options);
  }
  li.replaceChildren(...parts);
}

async function choose(state, prompt, option) {
  const key = `${state.id} ${prompt.key}`;
  answering.add(key);
  draw(state);
  try {
    await client.answer(state.id, option, prompt.key);
    say("user", typeof option === "string" ? option : JSON.stringify(option));
  } catch (error) {
    answering.delete(key);
    draw(state);
    say("assistant", `That answer did not go through: ${error.message}`, { kind: "failed" });
  }
}

/** @param {string} id */
function remove(id) {
  items.get(id)?.remove();
  items.delete(id);
  drawn.delete(id);
}

/** @param {string} id @param {any} state */
function learn(id, state) {
  if (jobs.has(id) || fetching.has(id)) return;
  const got = client
    .get(id)
    .then((job) => {
      jobs.set(id, job);
      if (!state.ended) draw(state);
    })
    .catch(() => {})
    .finally(() => fetching.delete(id));
  fetching.set(id, got);
}

/** @param {Record<string, any>} states */
function show(states) {
  for (const id of [...items.keys()]) if (!(id in states)) remove(id);
  for (const state of Object.values(states)) {
    if (state.ended) {
      remove(state.id);
      report(state);
    } else {
      learn(state.id, state);
      draw(state);
    }
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  say("user", text);
  try {
    const response = await fetch("/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ text }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail ?? response.statusText);
    say("assistant", body.reply, body.job ? { jobId: body.job.id } : {});
    if (body.job) {
      jobs.set(body.job.id, body.job);
      draw(jobState(body.job)); // in the bar at once; the poll takes it from here
    }
  } catch (error) {
    say("assistant", `Something went wrong: ${error.message}`, { kind: "failed" });
  }
});

// The session's jobs so far (a reload shows them again), oldest first, then live.
try {
  const { jobs: earlier } = await client.list({ limit: 100 });
  for (const job of earlier.reverse()) {
    jobs.set(job.id, job);
    say("user", asked(job));
    const state = jobState(job);
    if (state.ended) report(state);
  }
} catch (error) {
  say("assistant", `Could not load this chat's jobs: ${error.message}`, { kind: "failed" });
}
watchJobs(
  {},
  {
    baseUrl: BASE,
    transport: "poll",
    pollInterval: 500,
    onJobs: show,
    onError: (error) => {
      document.body.dataset.error = error.message;
    },
  },
);
document.body.dataset.ready = "true";
