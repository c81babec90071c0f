// A run's steps, built from its events: one task per `task_created`, its
// attempts, waits, streamed text, usage and (once the journal has it) its
// recorded result. The flow's own task (the run's root) is kept apart from
// the steps, so the counts the page shows are the table's rows.

import { el, fmtUs, fmtMs, plural, textBlock, valueBlock } from "./dom.js";
import { Mobs } from "./mob.js";

/** Rows drawn at most, in the table and the timeline: a 100,000-step run
 *  stays readable and the page stays quick. */
export const ROWS = 500;

/** True when a usage figure was counted by us, not reported by the server. */
export function estimated(u) {
  return !!u && (u.estimated === true || (u.estimated_turns | 0) > 0 || (u.estimated_tokens | 0) > 0);
}

export function usageText(u) {
  if (!u || !u.turns) return "";
  const total = u.total_tokens ?? (u.prompt_tokens || 0) + (u.completion_tokens || 0);
  return `${total} tokens (${u.prompt_tokens || 0} in · ${u.completion_tokens || 0} out) · ${plural(u.turns, "turn")}`;
}

export function usageCell(u) {
  const text = usageText(u);
  if (!text) return "";
  return el("span", { class: "usage" }, text, estimated(u) ? el("span", { class: "est", title: "the server reported no usage: counted here" }, " (estimated)") : "");
}

export class Steps {
  constructor() {
    this.tasks = new Map();
    this.root = null;
    this.mobs = new Mobs();
    // The server's clock: the newest event's time and when it arrived here.
    this.seen = { at: 0, local: 0 };
  }

  /** The server's time now, from the newest event (never this machine's clock). */
  now() { return this.seen.at ? this.seen.at + (performance.now() - this.seen.local) : 0; }

  task(id) {
    let t = this.tasks.get(id);
    if (!t) {
      t = { id, parent: null, agent: id === this.root ? "flow" : "?", pos: null, created: null, end: null, status: "pending", us: null,
            attempts: [], waits: [], streamed: "", turn: "", text: "", usage: null, progress: null,
            stderr: [], artifacts: [], retries: [], result: undefined };
      this.tasks.set(id, t);
    }
    return t;
  }

  /** Folds one event in; returns the task it touched (or null). */
  apply(kind, ev) {
    if (!ev || ev.task === undefined || ev.task === null) return null;
    if (ev.at_ms > this.seen.at) this.seen = { at: ev.at_ms, local: performance.now() };
    // Every event names its run's root task: the flow's own.
    if (this.root === null && ev.run !== undefined && ev.run !== null) this.root = ev.run;
    const t = this.task(ev.task);
    const at = ev.at_ms;
    if (t.created === null) t.created = at;
    switch (kind) {
      case "task_created":
        t.agent = ev.agent || "?"; t.parent = ev.parent ?? null; t.pos = ev.pos ?? null; t.created = at;
        break;
      case "attempt_started":
        t.attempts.push({ n: ev.attempt, start: at, end: null, status: "running" }); t.status = "running"; break;
      case "attempt_completed": {
        const a = t.attempts.find((x) => x.n === ev.attempt && x.end === null) || t.attempts[t.attempts.length - 1];
        if (a) { a.end = at; a.status = ev.status; }
        t.status = ev.status; t.us = ev.us ?? null; t.end = at; break;
      }
      case "task_suspended": t.status = "suspended"; t.waits.push({ start: at, end: null, key: ev.key }); break;
      case "task_resumed": {
        const w = t.waits.find((x) => x.end === null);
        if (w) w.end = at;
        t.status = "running"; break;
      }
      case "task_cancelled":
        t.status = "cancelled"; t.end = at;
        for (const a of t.attempts) if (a.end === null) { a.end = at; a.status = "cancelled"; }
        break;
      case "worker_output": this.output(t, ev.output, ev.data); break;
      case "layer_note":
        // A retry layer's try failed: it waits `backoff_ms`, then tries again.
        if (ev.layer === "retry" && ev.note) t.retries.push({ at, ...ev.note });
        if (ev.layer === "mob" && ev.note) this.mobs.apply(ev.note);
        break;
      default: break;
    }
    return t;
  }

  output(t, kind, d) {
    if (kind === "partial") {
      const piece = typeof d === "string" ? d : d && (d.delta ?? d.text);
      if (typeof piece === "string") { t.streamed += piece; t.turn += piece; }
    } else if (kind === "progress" && d && d.llm) {
      // A model turn ended: its text (if any) is the step's latest text.
      const u = t.usage || { turns: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
      u.turns += 1;
      u.prompt_tokens += d.llm.prompt_tokens || 0;
      u.completion_tokens += d.llm.completion_tokens || 0;
      u.total_tokens = u.prompt_tokens + u.completion_tokens;
      if (d.llm.estimated) u.estimated = true;
      t.usage = u;
      if (t.turn) { t.text = t.turn; t.turn = ""; }
    } else if (kind === "stderr") {
      t.stderr.push(typeof d === "string" ? d : JSON.stringify(d));
      if (t.stderr.length > 50) t.stderr.shift();
    } else if (kind === "artifact") {
      t.artifacts.push(d);
    } else {
      t.progress = d;
    }
  }

  /** The steps (every task but the flow's) in tree order, with depths. */
  ordered() {
    const kids = new Map();
    for (const t of this.tasks.values()) {
      const p = t.parent ?? -1;
      if (!kids.has(p)) kids.set(p, []);
      kids.get(p).push(t);
    }
    for (const list of kids.values()) list.sort((a, b) => a.id - b.id);
    const out = [];
    const placed = new Set();
    // Depth first without recursion: a deep tree cannot overflow the stack.
    const walk = (top) => {
      const stack = [{ t: top, depth: 0 }];
      while (stack.length) {
        const o = stack.pop();
        out.push(o);
        placed.add(o.t.id);
        const below = kids.get(o.t.id) || [];
        for (let i = below.length - 1; i >= 0; i--) stack.push({ t: below[i], depth: o.depth + 1 });
      }
    };
    for (const t of kids.get(-1) || []) walk(t);
    // Tasks whose parent was never seen still get a row.
    for (const t of this.tasks.values()) if (!placed.has(t.id)) out.push({ t, depth: 1 });
    return out;
  }

  steps() { return this.ordered().filter((o) => o.t.id !== this.root); }

  /** Steps that still wait for their recorded result. */
  missing() {
    return [...this.tasks.values()].filter((t) => t.pos && t.end !== null && t.result === undefined);
  }

  /** Recorded results and usage from the journal and the run's usage. */
  record(entries, usage) {
    const steps = new Map(entries.filter((e) => e.kind === "step").map((e) => [e.pos, e]));
    const byStep = (usage && usage.by_step) || {};
    for (const t of this.tasks.values()) {
      if (!t.pos) continue;
      const e = steps.get(t.pos);
      if (e) t.result = { ok: e.ok, value: e.value };
      if (byStep[t.pos] && byStep[t.pos].turns) t.usage = byStep[t.pos];
    }
  }

  elapsed(t) {
    if (t.us !== null && t.end !== null) return fmtUs(t.us);
    const start = t.attempts.length ? t.attempts[0].start : t.created;
    if (start === null) return "";
    return fmtMs(Math.max(0, (t.end ?? this.now()) - start)) + (t.end === null ? "…" : "");
  }

  /** The output cell: the recorded result once known, else the text
   *  streamed so far (the current turn's, else the last turn's). */
  outputCell(t) {
    const kids = [];
    if (t.result !== undefined) {
      kids.push(valueBlock(t.result.value));
    } else if (t.turn || t.text) {
      kids.push(textBlock(t.turn || t.text));
    } else if (t.progress !== null) {
      kids.push(textBlock(t.progress, "dim"));
    }
    for (const a of t.artifacts.slice(-3)) kids.push(el("details", {}, el("summary", {}, "artifact"), textBlock(a)));
    if (t.stderr.length) kids.push(el("details", {}, el("summary", {}, `stderr (${t.stderr.length})`), textBlock(t.stderr.join("\n"))));
    return el("td", { class: "out", "data-streamed": t.streamed }, ...kids);
  }

  /** The flow's own line: its status and how long it has taken. */
  renderFlow(flowBox) {
    const root = this.tasks.get(this.root);
    if (root) {
      flowBox.replaceChildren(el("b", {}, "flow"), ` (task ${root.id}) `, el("span", { class: root.status, id: "flow-status" }, root.status),
        el("span", { class: "dim" }, " · " + this.elapsed(root)),
        root.waits.some((w) => w.end === null) ? el("span", { class: "suspended" }, " · waiting for an answer") : "");
    }
  }

  /** The flow's line and the table of steps. */
  render(flowBox, table) {
    this.renderFlow(flowBox);
    const head = el("tr", {}, el("th", { class: "n" }, "task"), el("th", { class: "agent" }, "agent"),
      el("th", { class: "st" }, "status"), el("th", { class: "time" }, "time"), el("th", { class: "use" }, "usage"), el("th", {}, "output"));
    const all = this.steps();
    const rows = all.slice(0, ROWS).map(({ t, depth }) => el("tr", { "data-task": t.id, "data-agent": t.agent },
      el("td", {}, "t" + t.id),
      el("td", { class: "agent" }, "\u2003".repeat(Math.max(0, depth - 1)), depth > 1 ? "↳ " : "", t.agent,
        t.attempts.length > 1 ? el("span", { class: "dim" }, ` ×${t.attempts.length}`) : "",
        t.retries.length ? el("span", { class: "dim", title: t.retries.map((r) => `try ${r.try}: ${r.outcome} ${JSON.stringify(r.cause)}`).join("\n") },
          ` (${t.retries.length + 1} tries)`) : ""),
      el("td", { class: t.status }, t.status),
      el("td", {}, this.elapsed(t)),
      el("td", {}, usageCell(t.usage)),
      this.outputCell(t)));
    const more = all.length > ROWS ? el("tr", {}, el("td", { colspan: "6", class: "dim" }, `and ${all.length - ROWS} more steps (the journal has them all)`)) : null;
    table.replaceChildren(head, ...rows, ...(more ? [more] : []));
  }
}
