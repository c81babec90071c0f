// The page's two forms: an answer to an open question (why it was asked,
// the answer's expected shape, a JSON editor that checks before sending)
// and a new run (a blueprint, its input from a form built from the
// blueprint's declared `input` schema, or raw JSON).

import { api, authAdvice, session, LEAST_ROLE } from "./api.js";
import { el, textBlock, valueBlock } from "./dom.js";

const TYPES = { string: "string", number: "number", integer: "integer", boolean: "boolean", object: "object", array: "array", null: "null" };

function typeOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/** The common part of JSON Schema (type, enum, const, required,
 *  properties, additionalProperties, items, lengths and bounds): enough to
 *  catch a wrong answer before it is sent; the server has the last word. */
export function schemaErrors(schema, v, at = "the value") {
  if (!schema || typeof schema !== "object") return [];
  const errs = [];
  const types = schema.type === undefined ? [] : [].concat(schema.type).filter((t) => TYPES[t]);
  const is = typeOf(v);
  if (types.length && !types.some((t) => t === is || (t === "number" && is === "integer"))) {
    return [`${at} must be ${types.join(" or ")}, not ${is}`];
  }
  if (schema.enum && !schema.enum.some((x) => JSON.stringify(x) === JSON.stringify(v))) errs.push(`${at} must be one of ${schema.enum.map((x) => JSON.stringify(x)).join(", ")}`);
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(v)) errs.push(`${at} must be ${JSON.stringify(schema.const)}`);
  if (is === "string") {
    if (schema.minLength !== undefined && v.length < schema.minLength) errs.push(`${at} needs at least ${schema.minLength} characters`);
    if (schema.maxLength !== undefined && v.length > schema.maxLength) errs.push(`${at} takes at most ${schema.maxLength} characters`);
  }
  if (is === "number" || is === "integer") {
    if (schema.minimum !== undefined && v < schema.minimum) errs.push(`${at} must be ≥ ${schema.minimum}`);
    if (schema.maximum !== undefined && v > schema.maximum) errs.push(`${at} must be ≤ ${schema.maximum}`);
  }
  if (is === "object") {
    for (const k of schema.required || []) if (!(k in v)) errs.push(`${at} needs \`${k}\``);
    const props = schema.properties || {};
    for (const [k, x] of Object.entries(v)) {
      if (props[k]) errs.push(...schemaErrors(props[k], x, `\`${k}\``));
      else if (schema.additionalProperties === false) errs.push(`${at} has no field \`${k}\` (${Object.keys(props).join(", ") || "none"})`);
    }
  }
  if (is === "array") {
    if (schema.minItems !== undefined && v.length < schema.minItems) errs.push(`${at} needs at least ${schema.minItems} items`);
    if (schema.items && typeof schema.items === "object") v.forEach((x, i) => errs.push(...schemaErrors(schema.items, x, `item ${i + 1}`)));
  }
  return errs;
}

/** A starting value for a schema: what a user edits rather than types. */
export function template(schema) {
  if (!schema || typeof schema !== "object") return null;
  if ("default" in schema) return schema.default;
  if ("const" in schema) return schema.const;
  if (schema.enum) return schema.enum[0];
  switch ([].concat(schema.type)[0]) {
    case "object": return Object.fromEntries((schema.required || Object.keys(schema.properties || {}))
      .map((k) => [k, template((schema.properties || {})[k])]));
    case "array": return [];
    case "string": return "";
    case "number": case "integer": return 0;
    case "boolean": return false;
    default: return null;
  }
}

/** What an answer to `q` should look like: a schema (the question's own,
 *  or the escalation layer's `{ok}`), a template, and words. */
function expected(q) {
  const body = q.question && typeof q.question === "object" ? q.question : {};
  if (body.schema || body.answer_schema) {
    const schema = body.schema || body.answer_schema;
    return { schema, template: template(schema), text: true, words: "an answer matching this schema:" };
  }
  if (Array.isArray(body.choices) && body.choices.length) {
    return { schema: { enum: body.choices }, template: body.choices[0], words: "one of: " + body.choices.map((c) => JSON.stringify(c)).join(", ") };
  }
  if ("blocked" in body) {
    return { schema: { type: "object", properties: { ok: { type: "boolean" } } }, template: { ok: true },
             words: "`{\"ok\": true}` lets the step pass (add fields to pass them on with the override); `{\"ok\": false}` keeps it blocked." };
  }
  return { schema: null, template: "", text: true, words: "any JSON value, or plain text (sent as a string)." };
}

/** Why `q` was asked: the blocked agent's verdict, or the ask's text and data. */
function why(q) {
  const body = q.question;
  if (typeof body === "string") return [el("div", { class: "ask-text" }, body)];
  if (!body || typeof body !== "object") return [textBlock(body)];
  const out = [];
  if (body.text || body.prompt) out.push(el("div", { class: "ask-text" }, body.text || body.prompt));
  if ("blocked" in body) {
    out.push(el("div", { class: "why" }, `Why: agent \`${body.agent ?? "?"}\`${body.task !== undefined ? ` (task ${body.task})` : ""} answered blocked:`),
             el("div", { class: "verdict" }, valueBlock(body.blocked)));
  }
  const skip = new Set(["key", "text", "prompt", "schema", "answer_schema", "choices", "blocked", "agent", "task"]);
  const data = Object.fromEntries(Object.entries(body).filter(([k]) => !skip.has(k)));
  if (Object.keys(data).length) out.push(el("div", { class: "why" }, "With:"), el("div", { class: "data" }, textBlock(data)));
  return out;
}

/** Reads an editor: `{value}` when it is a valid answer, else `{error}`. */
function readAnswer(text, shape) {
  let value;
  try { value = JSON.parse(text); } catch (e) {
    const wantsText = !shape.schema || [].concat(shape.schema.type || []).includes("string");
    if (shape.text && wantsText && text.trim() !== "") value = text;
    else return { error: `not JSON: ${e.message}` };
  }
  const errs = schemaErrors(shape.schema, value);
  return errs.length ? { error: errs.join("; ") } : { value };
}

/** The card of one open question of run `runId`. */
export function questionCard(runId, q, onAnswered) {
  const shape = expected(q);
  const editor = el("textarea", { name: "value", spellcheck: "false", "aria-label": "answer" });
  editor.value = typeof shape.template === "string" ? shape.template : JSON.stringify(shape.template, null, 2);
  const status = el("div", { class: "check dim" });
  const send = el("button", { type: "submit" }, "answer");
  const check = () => {
    const r = readAnswer(editor.value, shape);
    editor.classList.toggle("invalid", !!r.error);
    status.className = r.error ? "check error" : "check dim";
    status.textContent = r.error ? r.error : typeof r.value === "string" && !editor.value.trim().startsWith('"') ? "will be sent as text" : "valid JSON";
    send.disabled = !!r.error;
    return r;
  };
  editor.addEventListener("input", check);
  const form = el("form", { class: "answer", "data-question": q.name, onsubmit: async (ev) => {
    ev.preventDefault();
    const r = check();
    if (r.error) return;
    send.disabled = true;
    try {
      await api("POST", `/v1/runs/${encodeURIComponent(runId)}/answers`, { question: q.name, value: r.value });
      card.replaceChildren(el("div", { class: "dim" }, `answered ${q.name}`));
      onAnswered();
    } catch (e) {
      status.className = "check error";
      status.textContent = authAdvice(e, "answer") || e.message;
      send.disabled = false;
    }
  } }, editor, status, send);
  const card = el("div", { class: "question", "data-question": q.name },
    el("div", {}, el("b", {}, q.name)), ...why(q),
    el("div", { class: "expect" }, el("span", { class: "dim" }, "Expected: "), shape.words),
    shape.schema && !("blocked" in (q.question || {})) && !Array.isArray(q.question?.choices) ? textBlock(shape.schema, "dim") : null,
    form);
  check();
  return card;
}

/** One field of a generated input form. */
function field(name, schema, required) {
  const type = [].concat(schema.type || "string")[0];
  const label = el("span", {}, schema.title || name, required ? " *" : "");
  let input;
  if (schema.enum) input = el("select", { name }, ...schema.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
  else if (type === "boolean") input = el("input", { type: "checkbox", name });
  else if (type === "number" || type === "integer") input = el("input", { type: "number", name, step: type === "integer" ? "1" : "any" });
  else if (type === "string") input = el("input", { type: "text", name });
  else input = el("textarea", { name, spellcheck: "false", placeholder: "JSON" });
  if ("default" in schema) {
    if (type === "boolean") input.checked = !!schema.default;
    else if (schema.enum) input.value = JSON.stringify(schema.default);
    else input.value = typeof schema.default === "string" ? schema.default : JSON.stringify(schema.default);
  }
  const read = () => {
    if (schema.enum) return { value: JSON.parse(input.value) };
    if (type === "boolean") return { value: input.checked };
    if (input.value === "") return {};
    if (type === "number" || type === "integer") return { value: Number(input.value) };
    if (type === "string") return { value: input.value };
    return { value: JSON.parse(input.value) };
  };
  return { node: el("label", {}, label, " ", input, schema.description ? el("div", { class: "dim" }, schema.description) : null), read };
}

/** The new-run form over `blueprints` (from /v1/blueprints). */
export function startForm(blueprints, onStarted) {
  const pick = el("select", { name: "blueprint", "aria-label": "blueprint" }, ...blueprints.map((b) => el("option", { value: b.name }, b.name)));
  const id = el("input", { type: "text", name: "id", placeholder: "run id (optional)" });
  const inputs = el("div", { class: "inputs" });
  const status = el("div", { class: "check dim" });
  const send = el("button", { type: "submit", id: "start-run" }, "start");
  let read = () => ({ value: null });
  let schema = null;
  const show = () => {
    const b = blueprints.find((x) => x.name === pick.value);
    schema = b && b.input && typeof b.input === "object" ? b.input : null;
    if (schema && schema.type === "object" && schema.properties) {
      const fields = Object.entries(schema.properties).map(([k, s]) => [k, field(k, s, (schema.required || []).includes(k))]);
      inputs.replaceChildren(el("div", { class: "dim" }, "input (declared by the blueprint):"), ...fields.map(([, f]) => f.node));
      read = () => Object.fromEntries(fields.map(([k, f]) => [k, f.read()]).filter(([, r]) => "value" in r).map(([k, r]) => [k, r.value]));
    } else {
      const raw = el("textarea", { name: "input", spellcheck: "false", "aria-label": "input (JSON)" });
      raw.value = JSON.stringify(schema ? template(schema) : {}, null, 2);
      inputs.replaceChildren(el("div", { class: "dim" }, schema ? "input (JSON, as the blueprint declares):" : "input (JSON):"),
        raw, schema ? textBlock(schema, "dim") : null);
      read = () => JSON.parse(raw.value);
    }
  };
  pick.addEventListener("change", show);
  show();
  const role = session.role;
  const allowed = !role || role === LEAST_ROLE.start;
  const form = el("form", { class: "start", id: "start-form", onsubmit: async (ev) => {
    ev.preventDefault();
    let input;
    try { input = read(); } catch (e) { status.className = "check error"; status.textContent = `the input is not JSON: ${e.message}`; return; }
    const errs = schemaErrors(schema, input);
    if (errs.length) { status.className = "check error"; status.textContent = errs.join("; "); return; }
    const body = { blueprint: pick.value, input };
    if (id.value.trim()) body.id = id.value.trim();
    send.disabled = true;
    try {
      const started = await api("POST", "/v1/runs", body);
      onStarted(started.id);
    } catch (e) {
      status.className = "check error";
      status.textContent = authAdvice(e, "start") || e.message;
      send.disabled = false;
    }
  } }, el("h2", {}, "Start a run"),
    blueprints.length ? null : el("p", { class: "error" }, "This server serves no blueprints."),
    el("label", {}, "blueprint ", pick), el("label", {}, "id ", id), inputs,
    allowed ? null : el("p", { class: "error" }, `Starting a run takes an operator token (yours is ${role}): make one with \`swarm token --role operator\`.`),
    status, send);
  send.disabled = !allowed || !blueprints.length;
  return form;
}
