// The console's shell: the page router (the URL's hash keeps the page and its query, so a
// link can be shared), the error banner and the token dialog. Each page is a module with
// init(ctx), show(params) and hide().

import { ApiError, token, setToken } from "./api.js";
import * as overview from "./overview.js";
import * as history from "./history.js";
import * as counts from "./counts.js";
import * as tail from "./tail.js";

const pages = { overview, history, counts, tail };
let current = null;

const banner = document.getElementById("banner");
const dialog = document.getElementById("token-dialog");

/** Shows an error from the server (or the network) as a readable sentence. */
function showError(err) {
  if (!err) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  const text = err instanceof ApiError ? err.describe() : `Error: ${err.message || err}`;
  banner.textContent = text;
  banner.hidden = false;
  if (err instanceof ApiError && err.status === 401) askToken(text);
}

function askToken(why) {
  document.getElementById("token-why").textContent =
    why || "Enter a token. A read token is enough for every page.";
  document.getElementById("token-input").value = token();
  if (!dialog.open) dialog.showModal();
}

/** Page name and query from the hash: `#/counts?tag=tenant:t42` -> ["counts", {tag: ...}]. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, q] = hash.split("?");
  const params = Object.fromEntries(new URLSearchParams(q || ""));
  return [pages[name] ? name : "overview", params];
}

/** Sets the hash for a page and its query; the hashchange handler shows it. */
function navigate(name, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  const hash = `#/${name}${s ? `?${s}` : ""}`;
  if (location.hash === hash) render();
  else location.hash = hash;
}

function render() {
  const [name, params] = route();
  showError(null);
  if (current && current !== name) pages[current].hide();
  for (const n of Object.keys(pages)) {
    document.getElementById(`page-${n}`).hidden = n !== name;
  }
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === name);
  }
  current = name;
  pages[name].show(params);
}

const ctx = { showError, navigate };
for (const p of Object.values(pages)) p.init(ctx);

document.getElementById("token-open").addEventListener("click", () => askToken());
document.getElementById("token-clear").addEventListener("click", () => {
  setToken("");
  document.getElementById("token-input").value = "";
});
document.getElementById("token-form").addEventListener("submit", () => {
  setToken(document.getElementById("token-input").value.trim());
  render();
});
window.addEventListener("hashchange", render);
// For tests and the curious: the live state of the pages (the chart's data, tail counters).
window.echologConsole = { pages };
render();
