// DOM helpers of the page: elements built from data (text always set as
// text, never parsed as HTML), and values shown the way people read them.

/** An element with attributes (`on*` become listeners) and children. */
export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null) e.append(k instanceof Node ? k : String(k));
  return e;
}

export function fmtUs(us) {
  return us >= 1e6 ? (us / 1e6).toFixed(2) + " s" : us >= 1e3 ? (us / 1e3).toFixed(1) + " ms" : us + " µs";
}

export function fmtMs(ms) {
  return ms >= 60000 ? `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`
    : ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms";
}

export function plural(n, one, many = one + "s") { return `${n} ${n === 1 ? one : many}`; }

/** A value as readable text: strings as they are, the rest as indented
 *  JSON whose strings show their line breaks and tabs as such (a Lua
 *  traceback reads as lines, not as `\n\t`). */
export function readable(v) {
  if (typeof v === "string") return v;
  if (v === undefined) return "";
  return JSON.stringify(v, null, 2).replace(/(?<!\\)((?:\\\\)*)\\n/g, "$1\n").replace(/(?<!\\)((?:\\\\)*)\\t/g, "$1\t");
}

/** A block that wraps long lines and keeps line breaks. */
export function textBlock(v, cls = "") {
  return el("pre", { class: ("wrap " + cls).trim() }, readable(v));
}

/** A failure `{code, message|error, ...}` as its code and its message's lines. */
export function failureBlock(v) {
  const message = v.message ?? v.error;
  const rest = Object.fromEntries(Object.entries(v).filter(([k]) => !["code", "message", "error"].includes(k)));
  return el("div", { class: "failure" }, el("b", { class: "bad" }, v.code || "error"), " ",
    textBlock(typeof message === "string" ? message : readable(message)),
    Object.keys(rest).length ? el("details", {}, el("summary", {}, "details"), textBlock(rest)) : null);
}

/** True for a value that reads as a failure. */
export function isFailure(v) {
  return v && typeof v === "object" && !Array.isArray(v) && typeof v.code === "string"
    && (typeof v.message === "string" || typeof v.error === "string");
}

/** A result: a failure as code and lines, anything else as readable text. */
export function valueBlock(v) { return isFailure(v) ? failureBlock(v) : textBlock(v); }
