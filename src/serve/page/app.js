// The page's entry: the token box, who the token is, the runs list, the
// open run (from the address's `#id`, the list, or the "open run" box)
// and the new-run form. Exactly one RunView exists at a time, and it is
// replaced only when another run is opened.

import { api, authAdvice, session } from "./api.js";
import { RunList } from "./runs.js";
import { RunView } from "./run.js";
import { startForm } from "./forms.js";

const $ = (sel) => document.querySelector(sel);
let view = null;

function problem(e) { $("#problem").textContent = e ? String(e.message || e) : ""; }

const list = new RunList({ onProblem: (e) => problem(e && !authAdvice(e, "read") ? e : null) });

/** Opens run `id` unless it is open already. */
function open(id) {
  if (!id) return;
  if (view && view.id === id) return;
  if (view) view.close();
  view = new RunView(id, { onProblem: problem, onEnd: () => list.reload() });
  view.mount($("#run"));
  list.select(id);
  view.start();
}

function fromHash() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) open(id);
}

async function whoami() {
  try {
    const me = await api("GET", "/v1/whoami");
    session.role = me.role;
    $("#whoami").textContent = `${me.role}${me.run ? ` · run ${me.run}` : ""}`;
  } catch (e) {
    session.role = null;
    $("#whoami").textContent = session.token ? "token refused" : "no token";
  }
}

async function newRun() {
  if (view) { view.close(); view = null; }
  list.select(null);
  const blueprints = await list.loadBlueprints();
  $("#run").replaceChildren(startForm(blueprints, (id) => { list.reload(); location.hash = "#" + encodeURIComponent(id); }));
}

$("#token").value = session.token;
$("#token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  session.token = $("#token").value.trim();
  localStorage.setItem("swarm.token", session.token);
  await whoami();
  list.reload();
  list.loadBlueprints();
  // The open run's one stream restarts with the new token, from where it was.
  if (view) view.start();
});
$("#open-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("#open-id").value.trim();
  if (id) location.hash = "#" + encodeURIComponent(id);
});
$("#new-run").addEventListener("click", newRun);
window.addEventListener("hashchange", fromHash);

whoami();
list.reload();
list.loadBlueprints();
fromHash();
setInterval(() => {
  list.reload();
  if (view && !view.ended) { view.refresh(); view.draw(); }
}, 2000);
setInterval(() => { if (view) view.tick(); }, 250);
// Ready: the forms above now act through the page (tests wait for this).
document.body.dataset.ready = "1";
