import { html } from "./lib.js";
export function SubmitPage() { return html`<h1>SubmitPage</h1>`; }
