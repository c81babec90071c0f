// A run's mob events (layer notes of layer `mob`: spawn, retire, respawn,
// fork, wire, unwire, tell, post, every turn and every send_message),
// grouped by member: one row per member, its events in order.

import { el } from "./dom.js";

/** Events kept per member (the newest). */
const KEEP = 20;

const clip = (v) => {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 80 ? s.slice(0, 79) + "…" : s;
};

export class Mobs {
  constructor() { this.members = new Map(); }

  add(mob, id, text) {
    if (!id) return;
    const key = `${mob}/${id}`;
    let list = this.members.get(key);
    if (!list) { list = []; this.members.set(key, list); }
    list.push(text);
    if (list.length > KEEP) list.shift();
  }

  /** Folds one mob note in. */
  apply(n) {
    const a = n.args || {}, out = n.answer || {}, mob = n.mob || "";
    const h = a.handle || {};
    switch (n.event) {
      case "spawn": case "ensure":
        this.add(mob, out.id, `${n.event === "spawn" ? "spawned" : "ensured"} (${out.agent}, incarnation ${out.incarnation})`); break;
      case "retire": this.add(mob, h.id, "retired"); break;
      case "respawn": this.add(mob, out.id, `respawned (incarnation ${out.incarnation})`); break;
      case "fork": this.add(mob, out.id, `forked from ${h.id}`); break;
      case "wire": case "unwire":
        this.add(mob, a.a, `${n.event}d to ${a.b}`); this.add(mob, a.b, `${n.event}d to ${a.a}`); break;
      case "tell":
        this.add(mob, h.id, `told ${a.to}: ${clip(a.text)}`); this.add(mob, a.to, `message from ${h.id}: ${clip(a.text)}`); break;
      case "post": this.add(mob, a.to, `message from ${a.from}: ${clip(a.text)}`); break;
      case "message":
        this.add(n.mob, n.from, `sent ${n.to} a message (send_message)`); this.add(n.mob, n.to, `message from ${n.from}`); break;
      case "turn": this.add(n.mob, n.member, `turn: ${clip(n.reply)}`); break;
      default: break;
    }
  }

  /** The table, hidden (with its heading) while the run has no mob. */
  render(head, table) {
    const empty = this.members.size === 0;
    head.hidden = empty;
    table.hidden = empty;
    if (empty) return;
    const rows = [...this.members.entries()].map(([key, list]) =>
      el("tr", { "data-member": key }, el("td", { class: "agent" }, key), el("td", {}, list.join(" · "))));
    table.replaceChildren(el("tr", {}, el("th", {}, "member"), el("th", {}, "events")), ...rows);
  }
}
