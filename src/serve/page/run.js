// One open run: its head, questions, flow line, steps, timeline and
// result, fed by exactly one event stream at a time. Every (re)start of
// the stream (a new token, a dropped connection) goes on from the last
// event id shown, and a stream that was replaced can no longer deliver:
// whatever the order of hash, token and reconnect, each event is shown
// once.

import { api, authAdvice, headers, ApiError } from "./api.js";
import { el, plural, valueBlock } from "./dom.js";
import { Steps, usageCell } from "./steps.js";
import { drawTimeline } from "./timeline.js";
import { questionCard } from "./forms.js";

/** How often a running run's journal is read for finished steps' results. */
const JOURNAL_EVERY = 500;

export class RunView {
  constructor(id, { onProblem, onEnd }) {
    this.id = id;
    this.onProblem = onProblem;
    this.onEnd = onEnd;
    this.steps = new Steps();
    this.cursor = 0;
    this.gen = 0;
    this.ctl = null;
    this.ended = false;
    this.closed = false;
    this.status = null;
    this.asked = "";
    this.drawing = false;
    this.journalDue = null;
  }

  mount(section) {
    const n = (tag, id, ...kids) => el(tag, { id }, ...kids);
    section.replaceChildren(el("h2", { id: "run-id" }, this.id), n("div", "run-head"), n("div", "run-advice"), n("div", "questions"),
      n("div", "flow-line"), el("h3", { id: "mob-head", hidden: true }, "Mob"), el("table", { id: "mob", hidden: true }),
      el("h3", {}, "Timeline"), n("div", "timeline"),
      el("h3", {}, "Steps"), el("table", { id: "steps" }), el("h3", {}, "Result"), n("div", "result", "…"));
    this.box = (id) => section.querySelector("#" + id);
    this.draw();
  }

  /** (Re)starts the one stream, from the last event shown. */
  start() {
    this.stop();
    const gen = ++this.gen;
    this.follow(gen, 0);
    this.refresh();
  }

  /** Leaves the run for good: nothing of this view draws any more. */
  close() {
    this.closed = true;
    this.stop();
  }

  stop() {
    this.gen++;
    if (this.ctl) this.ctl.abort();
    this.ctl = null;
  }

  async follow(gen, tries) {
    const ctl = new AbortController();
    this.ctl = ctl;
    const after = this.cursor ? `?after=${this.cursor}` : "";
    try {
      const resp = await fetch(`/v1/runs/${encodeURIComponent(this.id)}/events${after}`, { headers: headers(false), signal: ctl.signal });
      if (!resp.ok) {
        const data = await resp.json().catch(() => ({}));
        throw new ApiError(resp.status, data.code || String(resp.status), data.message || resp.statusText);
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (gen !== this.gen) { reader.cancel().catch(() => {}); return; }
        if (done) break;
        buf += value.replace(/\r\n/g, "\n");
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          if (this.block(block)) return;
        }
      }
    } catch (e) {
      if (e.name === "AbortError" || gen !== this.gen) return;
      const advice = e instanceof ApiError && authAdvice(e, "read");
      if (advice) { this.box("run-advice").replaceChildren(el("p", { class: "advice" }, advice)); return; }
      if (e instanceof ApiError && e.status === 404) { this.box("run-advice").replaceChildren(el("p", { class: "advice" }, e.detail)); return; }
      this.onProblem(e);
    }
    if (gen !== this.gen || this.ended) return;
    // The stream broke before the run's end: go on from the last event.
    const wait = Math.min(10000, 500 * 2 ** tries);
    setTimeout(() => { if (gen === this.gen) this.follow(gen, tries + 1); }, wait);
  }

  /** One SSE block; true once the run's `end` arrived. */
  block(block) {
    let id = null, kind = "", data = "";
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const name = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (name === "id") id = Number(value);
      else if (name === "event") kind = value;
      else if (name === "data") data += (data ? "\n" : "") + value;
    }
    if (kind === "end") {
      this.ended = true;
      this.refresh();
      this.fetchJournal();
      this.onEnd(this.id);
      return true;
    }
    if (!kind || !data) return false;
    // Shown already (a stream restarted from an older cursor): skip.
    if (id !== null) {
      if (id <= this.cursor) return false;
      this.cursor = id;
    }
    const ev = JSON.parse(data);
    const t = this.steps.apply(kind, ev);
    if (["task_suspended", "task_resumed", "senior_queried", "senior_answered"].includes(kind)) this.refresh();
    if (kind === "attempt_completed" && t && t.pos) this.journalSoon();
    this.draw();
    return false;
  }

  /** Reads the recorded results soon (one read for a burst of steps). */
  journalSoon() {
    if (this.journalDue) return;
    this.journalDue = setTimeout(() => { this.journalDue = null; this.fetchJournal(); }, JOURNAL_EVERY);
  }

  async fetchJournal() {
    try {
      const [{ entries }, run] = await Promise.all([
        api("GET", `/v1/runs/${encodeURIComponent(this.id)}/journal`),
        api("GET", `/v1/runs/${encodeURIComponent(this.id)}`),
      ]);
      if (this.closed) return;
      this.steps.record(entries, run.usage);
      this.draw();
    } catch (e) { if (!this.closed) this.onProblem(e); }
  }

  /** Redraws on the next frame (a burst of events draws once). */
  draw() {
    if (this.drawing) return;
    this.drawing = true;
    requestAnimationFrame(() => {
      this.drawing = false;
      if (this.closed || !this.box) return;
      this.steps.render(this.box("flow-line"), this.box("steps"));
      this.steps.mobs.render(this.box("mob-head"), this.box("mob"));
      drawTimeline(this.box("timeline"), this.steps);
      this.head();
    });
  }

  /** Between events: the running bars grow with the server's clock. */
  tick() {
    if (this.closed || this.ended || !this.box || this.drawing) return;
    this.steps.renderFlow(this.box("flow-line"));
    drawTimeline(this.box("timeline"), this.steps);
  }

  head() {
    const r = this.run;
    if (!r || this.closed) return;
    const steps = this.steps.steps();
    const done = steps.filter(({ t }) => t.end !== null).length;
    const usage = r.usage && r.usage.total && r.usage.total.turns ? r.usage.total : null;
    this.box("run-head").replaceChildren(el("p", {}, "status ", el("b", { id: "run-status", class: r.status }, r.status),
      el("span", { class: "dim", id: "run-counts" }, ` · ${r.blueprint} · ${plural(steps.length, "step")} (${done} done)`),
      usage ? el("span", { class: "dim" }, " · ") : "", usage ? usageCell(usage) : "",
      r.cause ? el("span", { class: "bad" }, ` · ${r.cause.code}`) : "",
      r.status === "running" ? this.action("cancel", "cancel") : "",
      // A diverged run is not offered: forcing it past its journal is a
      // decision for `swarm resume --force`, not a button.
      r.status === "interrupted" ? this.action("resume", "resume") : ""));
  }

  /** A button that asks the server to `verb` the run (cancel, resume). */
  action(verb, label, body = {}) {
    return el("button", { type: "button", id: `run-${verb}`, class: "act", onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        await api("POST", `/v1/runs/${encodeURIComponent(this.id)}/${verb}`, body);
        if (verb === "resume") { this.ended = false; this.start(); } else this.refresh();
      } catch (e) {
        this.box("run-advice").replaceChildren(el("p", { class: "advice" }, authAdvice(e, verb) || e.message));
        ev.target.disabled = false;
      }
    } }, label);
  }

  /** The run's record: head, result, open questions. */
  async refresh() {
    try {
      const r = await api("GET", `/v1/runs/${encodeURIComponent(this.id)}`);
      if (this.closed) return;
      this.run = r;
      this.head();
      this.box("run-advice").replaceChildren();
      this.box("result").replaceChildren(r.result == null ? el("p", { class: "dim" }, "(none yet)") : valueBlock(r.result));
      if (r.cause && !r.result) this.box("result").append(valueBlock(r.cause));
      const open = r.open_questions || [];
      const asked = JSON.stringify(open.map((q) => q.name));
      // Redrawn only when the questions change, so an answer being typed stays.
      if (asked !== this.asked) {
        this.asked = asked;
        this.box("questions").replaceChildren(...open.map((q) => questionCard(this.id, q, () => this.refresh())));
      }
      if (r.status !== "running" && this.steps.missing().length) this.fetchJournal();
    } catch (e) {
      if (this.closed) return;
      const advice = authAdvice(e, "read");
      if (advice) this.box("run-advice").replaceChildren(el("p", { class: "advice" }, advice));
      else if (e.status === 404) this.box("run-advice").replaceChildren(el("p", { class: "advice" }, `No run \`${this.id}\` here (${e.detail}).`));
      else this.onProblem(e);
    }
  }
}
