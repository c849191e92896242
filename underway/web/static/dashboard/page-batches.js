import { html } from "./lib.js";
export function BatchesPage() { return html`<h1>BatchesPage</h1>`; }
export function BatchPage() { return html`<h1>BatchPage</h1>`; }
