// The browser tests' page script: creates one <underway-job> or <underway-batch> from the
// page's query string and records the events it fires. Served from the page's own origin
// under `script-src 'self'`: nothing inline.
//
//   ?element=job|batch  &id=…  [&transport=sse|ws|poll] [&token=…] [&token-url=…]
//   [&provider=URL]  a tokenProvider property that POSTs to URL, instead of an attribute
import "/assets/underway-elements.js";

const params = new URLSearchParams(location.search);
const kind = params.get("element") || "job";

window.__underway = { progress: [], end: [] };
for (const name of ["progress", "end"]) {
  document.addEventListener(`underway-${name}`, (event) => {
    window.__underway[name].push(JSON.parse(JSON.stringify(event.detail)));
  });
}

const element = document.createElement(`underway-${kind}`);
const provider = params.get("provider");
if (provider) {
  element.tokenProvider = async () => {
    window.__providerCalls = (window.__providerCalls || 0) + 1;
    const response = await fetch(provider, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Requested-With": "page" },
      body: JSON.stringify({ [kind]: params.get("id") }),
    });
    return (await response.json()).token;
  };
}
for (const name of ["transport", "token", "token-url", "base-url"]) {
  if (params.has(name)) element.setAttribute(name, params.get(name));
}
element.setAttribute(`${kind}-id`, params.get("id"));
document.getElementById("app").append(element);
window.__element = element;
window.__ready = true;
