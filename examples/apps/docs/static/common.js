// What both pages share: where underway is mounted, how a job's state reads, the toast.
export const API = "/underway/api";
// A server that restarts comes back within seconds: retry soon, and never wait more than 4 s.
export const WS = { baseUrl: API, transport: "ws", retryDelay: 500, maxRetryDelay: 4000 };

const LABELS = {
  queued: "pending",
  running: "processing",
  waiting: "processing",
  succeeded: "completed",
  failed: "failed",
  cancelled: "cancelled",
};

/** What the user calls a job's status. */
export function statusLabel(status) {
  return LABELS[status] ?? "connecting";
}

/** The whole job's percent: each of its steps is an equal share. */
export function overallPercent(state) {
  if (state?.status === "succeeded") return 100;
  const progress = state?.progress;
  if (!progress || progress.percent === null) return 0;
  if (!progress.step || !progress.steps) return Math.round(progress.percent);
  return Math.round(((progress.step - 1) * 100 + progress.percent) / progress.steps);
}

/** `<tag class=…>text</tag>`: every string a job gives is set as text, never as HTML. */
export function el(tag, text = "", className = "") {
  const node = document.createElement(tag);
  if (text !== "") node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/** The fields the stand-in model extracted, as a definition list. */
export function fieldsView(result) {
  const list = el("dl", "", "fields");
  const rows = [
    ["Title", result.title],
    ["Words", result.words],
    ["First sentence", result.first_sentence],
    ["Entities", (result.entities ?? []).join(", ") || "none"],
  ];
  if (result.pages !== undefined) rows.push(["Pages", result.pages]);
  for (const [name, value] of rows) {
    list.append(el("dt", name), el("dd", value ?? ""));
  }
  return list;
}

/** A job's error as a sentence. */
export function errorText(error) {
  if (!error) return "the extraction failed";
  return error.message || error.type || "the extraction failed";
}

/** A notice in the corner for a few seconds. */
export function toast(text, kind) {
  let box = document.querySelector("#toasts");
  if (!box) {
    box = el("div", "", "toasts");
    box.id = "toasts";
    box.setAttribute("role", "status");
    box.setAttribute("aria-live", "polite");
    document.body.append(box);
  }
  const note = el("div", text, `toast toast-${kind}`);
  box.append(note);
  setTimeout(() => note.remove(), 8000);
}
