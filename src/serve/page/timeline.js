// The run's timeline: one bar per task from its creation to its end (the
// flow on top, each step nested under its parent), its attempts drawn
// inside it, a retry layer's waits between tries marked, and its waits
// for an answer hatched. Parallel branches are rows whose bars overlap in time. Live:
// a running task's bar grows with the server's clock.

import { el, fmtMs } from "./dom.js";
import { ROWS } from "./steps.js";

/** Draws `steps` (a Steps) into `box`. Positions are set through the
 *  style object (allowed by the page's policy; style attributes are not). */
export function drawTimeline(box, steps) {
  const all = steps.ordered();
  const rows = all.slice(0, ROWS + 1);
  if (!rows.length) { box.replaceChildren(); return; }
  const now = steps.now();
  const span = (t) => [t.created, t.end ?? now];
  let t0 = Infinity, t1 = -Infinity;
  for (const { t } of rows) {
    const [a, b] = span(t);
    if (a !== null) { t0 = Math.min(t0, a); t1 = Math.max(t1, b); }
  }
  const total = Math.max(1, t1 - t0);
  const pct = (ms) => `${((ms - t0) / total) * 100}%`;
  const width = (a, b) => `${(Math.max(0, b - a) / total) * 100}%`;
  const place = (node, a, b) => { node.style.left = pct(a); node.style.width = width(a, b); return node; };
  const out = rows.map(({ t, depth }) => {
    const [a, b] = span(t);
    const bar = el("div", { class: "tl-bar " + t.status, "data-task": t.id, "data-start": a, "data-end": t.end ?? "",
                            title: `${t.agent} (task ${t.id}): ${t.status}, ${fmtMs(b - a)}` });
    place(bar, a, b);
    // Segments are placed within the bar: relative to the bar's own span.
    const inner = (x, y) => {
      const w = Math.max(1, b - a);
      return [`${((x - a) / w) * 100}%`, `${(Math.max(0, y - x) / w) * 100}%`];
    };
    for (const at of t.attempts) {
      const [left, w] = inner(at.start, at.end ?? b);
      const seg = el("div", { class: "tl-att", title: `attempt ${at.n}: ${at.status}` });
      seg.style.left = left; seg.style.width = w;
      bar.append(seg);
    }
    for (const r of t.retries) {
      const [left, w] = inner(r.at, Math.min(b, r.at + (r.backoff_ms || 0)));
      const seg = el("div", { class: "tl-retry", title: `try ${r.try} ${r.outcome}; waited ${fmtMs(r.backoff_ms || 0)} to try again` });
      seg.style.left = left; seg.style.width = w;
      bar.append(seg);
    }
    for (const wait of t.waits) {
      const [left, w] = inner(wait.start, wait.end ?? b);
      const seg = el("div", { class: "tl-wait", title: `waiting for an answer (${wait.key || "question"})` });
      seg.style.left = left; seg.style.width = w;
      bar.append(seg);
    }
    const label = el("div", { class: "tl-label", title: t.agent },
      t.id === steps.root ? "flow" : "\u2003".repeat(Math.max(0, depth - 1)) + (depth ? "↳ " : "") + t.agent);
    return el("div", { class: "tl-row", "data-task": t.id }, label, el("div", { class: "tl-track" }, bar));
  });
  const more = all.length > rows.length ? el("div", { class: "dim" }, `and ${all.length - rows.length} more`) : null;
  box.replaceChildren(el("div", { class: "tl-axis" }, el("span", {}, "0"), el("span", {}, fmtMs(total))), ...out, ...(more ? [more] : []));
}
