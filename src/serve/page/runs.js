// The runs list: newest first, filtered by status and blueprint, paged by
// the API's `next` ("load more"), and kept fresh by re-reading the pages
// already shown, so a run started anywhere appears at the top.

import { api, authAdvice } from "./api.js";
import { el } from "./dom.js";

const PAGE = 50;
// New runs a re-read makes room for, beyond those shown.
const NEW = 25;

export class RunList {
  constructor({ onProblem }) {
    this.nav = document.querySelector("#runs");
    this.moreButton = document.querySelector("#more");
    this.status = document.querySelector("#filter-status");
    this.blueprint = document.querySelector("#filter-blueprint");
    this.onProblem = onProblem;
    this.runs = [];
    this.next = null;
    this.open = null;
    // Bumped when the filters change: a page read under older ones is dropped.
    this.filters = 0;
    // Bumped whenever the list changes: a re-read begun before is dropped
    // (it comes again in a moment), so it never undoes a "load more".
    this.version = 0;
    this.moreButton.addEventListener("click", () => this.more());
    for (const f of [this.status, this.blueprint]) f.addEventListener("change", () => { this.filters++; this.runs = []; this.reload(); });
  }

  query(limit, after) {
    const q = new URLSearchParams({ order: "newest", limit: String(limit) });
    if (this.status.value) q.set("status", this.status.value);
    if (this.blueprint.value) q.set("blueprint", this.blueprint.value);
    if (after) q.set("after", after);
    return "/v1/runs?" + q;
  }

  /** Re-reads as many runs as are shown (at least a page), from the newest. */
  async reload() {
    const [filters, version] = [this.filters, this.version];
    try {
      // Room for runs started since; cut after the last run shown, so the
      // list neither shrinks nor grows by itself.
      const last = this.runs.length ? this.runs[this.runs.length - 1].id : null;
      const page = await api("GET", this.query(Math.min(1000, Math.max(PAGE, this.runs.length + NEW))));
      if (filters !== this.filters || version !== this.version) return;
      const at = last === null ? -1 : page.runs.findIndex((r) => r.id === last);
      if (at >= 0 && at < page.runs.length - 1) { page.runs = page.runs.slice(0, at + 1); page.next = last; }
      this.version++;
      this.runs = page.runs;
      this.next = page.next;
      this.render();
      this.onProblem(null);
    } catch (e) {
      if (filters !== this.filters) return;
      const advice = authAdvice(e, "read");
      this.nav.replaceChildren(el("p", { class: "advice", id: "runs-advice" }, advice || `Cannot list runs: ${e.message}`));
      this.moreButton.hidden = true;
      this.onProblem(e);
    }
  }

  /** The next page after the last run shown. */
  async more() {
    if (!this.next) return;
    const filters = this.filters;
    try {
      const page = await api("GET", this.query(PAGE, this.next));
      if (filters !== this.filters) return;
      this.version++;
      const have = new Set(this.runs.map((r) => r.id));
      this.runs.push(...page.runs.filter((r) => !have.has(r.id)));
      this.next = page.next;
      this.render();
    } catch (e) { this.onProblem(e); }
  }

  /** Fills the blueprint filter from the served blueprints. */
  async loadBlueprints() {
    try {
      const { blueprints } = await api("GET", "/v1/blueprints");
      const chosen = this.blueprint.value;
      this.blueprint.replaceChildren(el("option", { value: "" }, "any blueprint"),
        ...blueprints.map((b) => el("option", { value: b.name, selected: b.name === chosen }, b.name)));
      return blueprints;
    } catch (_) { return []; }
  }

  select(id) {
    this.open = id;
    this.nav.querySelectorAll("a").forEach((a) => a.classList.toggle("open", a.dataset.run === id));
  }

  render() {
    this.moreButton.hidden = !this.next;
    if (!this.runs.length) {
      this.nav.replaceChildren(el("p", { class: "dim pad" }, "No runs yet."));
      return;
    }
    this.nav.replaceChildren(...this.runs.map((r) => el("a", {
      href: "#" + encodeURIComponent(r.id), "data-run": r.id, class: r.id === this.open ? "open" : "",
      title: new Date(r.created_ms).toLocaleString(),
    }, el("div", {}, r.id), el("div", { class: r.status }, r.status, el("span", { class: "dim" }, " · " + r.blueprint)))));
  }
}
