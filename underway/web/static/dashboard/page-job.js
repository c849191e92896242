import { html } from "./lib.js";
export function JobPage() { return html`<h1>JobPage</h1>`; }
