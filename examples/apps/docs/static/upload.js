// The upload page: send the file, then follow its job over the WebSocket.
import { watchJob } from "/underway/assets/underway.js";
import { API, WS, el, errorText, fieldsView, overallPercent, statusLabel } from "./common.js";
import { expect } from "./notify.js";

const form = document.querySelector("#upload");
const input = document.querySelector("#file");
const card = document.querySelector("#job");
let watch = null;

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = input.files[0];
  if (!file) return;
  const problem = document.querySelector("#problem");
  problem.textContent = "";
  const response = await fetch(`/documents?name=${encodeURIComponent(file.name)}`, {
    method: "POST",
    body: file,
    headers: { "X-Requested-With": "docs", "Content-Type": file.type || "application/octet-stream" },
  });
  const answer = await response.json();
  if (!response.ok) {
    problem.textContent = answer.detail ?? "the upload failed";
    return;
  }
  form.reset();
  expect(answer.job, answer.name);
  follow(answer.job, answer.name);
});

function follow(jobId, name) {
  watch?.close();
  card.hidden = false;
  card.dataset.job = jobId;
  card.querySelector(".name").textContent = name;
  const status = card.querySelector(".status");
  const bar = card.querySelector("progress");
  const percent = card.querySelector(".percent");
  const step = card.querySelector(".step");
  const history = card.querySelector(".history");
  const outcome = card.querySelector(".outcome");
  const connection = card.querySelector(".connection");
  history.replaceChildren();
  outcome.replaceChildren();
  status.textContent = "connecting";
  bar.value = 0;
  percent.textContent = "0%";
  step.textContent = "";

  watch = watchJob(jobId, {
    ...WS,
    onEvent(event) {
      if (event.type !== "status") return;
      const label = statusLabel(event.data.status);
      if (history.lastElementChild?.textContent !== label) history.append(el("li", label));
    },
    onJob(state) {
      status.textContent = statusLabel(state.status);
      card.dataset.status = statusLabel(state.status);
      const value = overallPercent(state);
      bar.value = value;
      percent.textContent = `${value}%`;
      const progress = state.progress;
      step.textContent = progress?.step && !state.ended ? `step ${progress.step}/${progress.steps}: ${progress.message}` : "";
      if (!state.ended) return;
      if (state.status === "succeeded") outcome.replaceChildren(el("h3", "Extracted"), fieldsView(state.result));
      else outcome.replaceChildren(el("p", `Failed: ${errorText(state.error)}`, "error"));
    },
    onConnection(connected) {
      connection.hidden = connected; // the watch reconnects by itself, and resumes after its last event
    },
  });
}
