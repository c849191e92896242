import { html } from "./lib.js";
export function QueuesPage() { return html`<h1>QueuesPage</h1>`; }
