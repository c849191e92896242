import { html } from "./lib.js";
export function JobsPage() { return html`<h1>JobsPage</h1>`; }
