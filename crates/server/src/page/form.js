// ---- workflows and the run form generated from their `inputs` JSON Schema ----
let selectedWorkflow = null;
let formFields = []; // {key, schema, input, error, required}
let starting = false; // a start request is in flight: one click, one run

async function loadWorkflows() {
  const list = $("workflows");
  const r = await api("GET", "/api/workflows");
  list.replaceChildren();
  if (r.status !== 200) {
    list.append(el("li", "bad", errorText(r.body, r.status)));
    return;
  }
  const workflows = (r.body && r.body.workflows) || [];
  state.workflows = workflows;
  fillWorkflowFilter(workflows);
  if (!workflows.length) list.append(el("li", "muted", "no workflows (start flowrun serve with --workflows DIR)"));
  for (const w of workflows) {
    const li = el("li");
    const open = el("button", "open");
    open.type = "button";
    open.append(el("strong", null, w.name || w.id));
    if (w.name && w.name !== w.id) open.append(el("span", "muted mono", " " + w.id));
    // A space before each badge: the button's name reads "bad invalid", not "badinvalid".
    if (!w.valid) open.append(" ", el("span", "badge bad", "invalid"));
    const unbound = (w.connections || []).filter((c) => c.required && !c.bound);
    if (unbound.length) open.append(" ", el("span", "badge bad", "needs " + unbound.map((c) => c.env).join(", ")));
    if (w.description) open.append(el("span", "muted small-text", " — " + w.description));
    open.addEventListener("click", () => selectWorkflow(w, li));
    li.append(open);
    li.dataset.id = w.id;
    list.append(li);
    if (selectedWorkflow && selectedWorkflow.id === w.id) selectWorkflow(w, li, true);
  }
  // The chosen workflow's file is gone: no form to run what is not there.
  if (selectedWorkflow && !workflows.some((w) => w.id === selectedWorkflow.id)) {
    say("workflow '" + selectedWorkflow.id + "' is no longer in the list (its file was removed or renamed)", true);
    deselectWorkflow();
  }
}

function fillWorkflowFilter(workflows) {
  const sel = $("f-workflow");
  const keep = sel.value;
  sel.replaceChildren(el("option", null, "all"));
  sel.firstChild.value = "";
  for (const w of workflows) {
    const o = el("option", null, w.name && w.name !== w.id ? w.name + " (" + w.id + ")" : w.id);
    o.value = w.id;
    sel.append(o);
  }
  sel.value = keep;
}

// Why Run cannot be pressed, or "" when it can.
function runBlocker(w) {
  if (!w.valid) return "the workflow is not valid (see above)";
  const missing = (w.connections || []).filter((c) => c.required && !c.bound);
  if (missing.length) return "missing connection" + (missing.length > 1 ? "s" : "") + ": set " + missing.map((c) => c.env).join(", ") + " where flowrun serve runs, and restart it";
  const agents = (w.agents || []).filter((a) => !a.available);
  if (agents.length) return "missing agent CLI" + (agents.length > 1 ? "s" : "") + ": " + agents.map((a) => a.command.includes("/") ? "no executable file at " + a.command : "install " + a.command + " (npm install -g " + a.npm_package + ") on the PATH flowrun serve runs with").join("; ");
  if (starting) return "starting…";
  return "";
}

function updateRunButton() {
  const w = selectedWorkflow;
  if (!w) return;
  const why = runBlocker(w);
  $("run-button").disabled = !!why;
  $("run-reason").textContent = why;
}

// No workflow marked chosen in the list.
function unmarkWorkflows() {
  for (const x of document.querySelectorAll("#workflows li.selected")) {
    x.classList.remove("selected");
    x.querySelector("button.open")?.removeAttribute("aria-current");
  }
}

// No workflow chosen: none marked, no run form, none in the address.
function deselectWorkflow() {
  unmarkWorkflows();
  selectedWorkflow = null;
  show($("run"), false);
  placeInUrl();
}

function selectWorkflow(w, li, refresh) {
  unmarkWorkflows();
  li.classList.add("selected");
  li.querySelector("button.open")?.setAttribute("aria-current", "true");
  const same = selectedWorkflow && selectedWorkflow.id === w.id;
  // Listed again (Reload) with another definition (an input added or removed, a default or a
  // node changed): the form is built anew, what was typed brought back (`typed`).
  const unchanged = same && JSON.stringify(selectedWorkflow) === JSON.stringify(w);
  selectedWorkflow = w;
  show($("run"), true);
  $("wf-name").textContent = w.name || w.id;
  $("wf-desc").textContent = w.description || "";
  const problems = $("wf-problems");
  problems.replaceChildren();
  for (const e of w.errors || []) {
    const where = [e.file && e.line ? e.file.split("/").pop() + ":" + e.line : null, e.node ? "node '" + e.node + "'" : null, e.field ? "field '" + e.field + "'" : null].filter(Boolean).join(", ");
    problems.append(el("li", null, (where ? where + ": " : "") + e.message));
  }
  if (!(unchanged && refresh)) { buildForm(w); buildRunOptions(w); }
  $("run-message").textContent = "";
  updateRunButton();
  if (!refresh) focusRunForm();
  placeInUrl();
}

// The run form's first field, or Run when it has none (also where "Skip to the run form" goes);
// the workflow's name when Run cannot be used either (an invalid workflow: its problems follow
// the name, and are read next).
function focusRunForm() {
  const first = $("fields").querySelector("input, select, textarea");
  const target = first || ($("run-button").disabled ? $("wf-name") : $("run-button"));
  target.focus();
}

function fieldKind(s) {
  if (Array.isArray(s.enum)) return "enum";
  const t = schemaType(s);
  if (t === "boolean") return "boolean";
  if (t === "integer" || t === "number") return t;
  if (t === "array" || t === "object") return "json";
  if (t === "string" || t === undefined) return "string";
  return "json";
}

// Breakpoint and cost limit, when the server supports them (GET /api features).
function buildRunOptions(w) {
  const canBreak = !!state.features.break_before, canCost = !!state.features.max_cost_usd;
  show($("run-options"), canBreak || canCost);
  show($("break-field"), canBreak);
  show($("cost-field"), canCost);
  const sel = $("break-before");
  sel.replaceChildren(el("option", null, "(run to the end)"));
  sel.firstChild.value = "";
  for (const n of w.nodes || []) {
    const o = el("option", null, n.name ? n.name + " (" + n.id + ")" : n.id);
    o.value = n.id;
    sel.append(o);
  }
  $("max-cost").value = "";
  $("cost-error").textContent = "";
  $("max-cost").removeAttribute("aria-invalid");
}

// What the run options add to the request body; null (and the field marked) when invalid.
function runOptions() {
  const body = {};
  if (state.features.break_before && $("break-before").value) body.break_before = [$("break-before").value];
  const raw = $("max-cost").value.trim();
  $("cost-error").textContent = "";
  $("max-cost").removeAttribute("aria-invalid");
  if (state.features.max_cost_usd && raw) {
    const parsed = parseNumber(raw, false);
    const n = parsed.value;
    if (parsed.error || n < 0) {
      $("cost-error").textContent = "a number of dollars, 0 or more, like 0.5" + (parsed.error ? " (" + parsed.error + ")" : "");
      $("max-cost").setAttribute("aria-invalid", "true");
      return null;
    }
    body.max_cost_usd = n;
  }
  return body;
}

// A field's schema type, the one that is not null (`["integer", "null"]` is an integer).
function schemaType(s) {
  return Array.isArray(s.type) ? s.type.find((x) => x !== "null") : s.type;
}

// What was typed into each workflow's form, by workflow id, then field: the workflow chosen
// again (or another one and back) shows it again rather than its defaults.
const typed = new Map();

// A JSON field's hint: what to type, by its schema's type.
function jsonHint(s) {
  const t = schemaType(s);
  if (t === "array") return "a JSON list, like [\"a\", \"b\"]";
  if (t === "object") return "a JSON object, like {\"a\": 1}";
  return "JSON, like \"text\", 3 or [1, 2]";
}

function buildForm(w) {
  const box = $("fields");
  box.replaceChildren();
  formFields = [];
  if (!typed.has(w.id)) typed.set(w.id, new Map());
  const mine = typed.get(w.id);
  const schema = w.inputs || {};
  const props = schema.properties || {};
  const keys = Object.keys(props);
  show($("no-inputs"), keys.length === 0);
  const required = new Set(schema.required || []);
  const defaults = w.defaults || {};
  keys.forEach((key, i) => {
    const s = props[key] || {};
    const kind = fieldKind(s);
    const id = "in-" + i;
    const wrap = el("div", "field" + (kind === "boolean" ? " check" : ""));
    const label = el("label", null, s.title || key);
    label.htmlFor = id;
    if (required.has(key)) {
      const star = el("span", "req", " *");
      star.setAttribute("aria-hidden", "true");
      label.append(star);
    }
    let input;
    const value = defaults[key] !== undefined ? defaults[key] : s.default;
    if (kind === "enum") {
      input = el("select");
      if (!required.has(key)) input.append(el("option", null, ""));
      for (const v of s.enum) {
        const o = el("option", null, typeof v === "string" ? v : JSON.stringify(v));
        o.value = JSON.stringify(v);
        input.append(o);
      }
      if (value !== undefined) input.value = JSON.stringify(value);
    } else if (kind === "boolean") {
      input = el("input");
      input.type = "checkbox";
      input.checked = value === true;
    } else if (kind === "json") {
      input = el("textarea", "json");
      input.spellcheck = false;
      input.value = value !== undefined ? JSON.stringify(value, null, 2) : "";
    } else if (kind === "string" && ((s.maxLength || 0) > 120 || s.format === "textarea" || s.multiline || (typeof value === "string" && (value.length > 60 || value.includes("\n"))))) {
      input = el("textarea");
      input.value = value !== undefined ? String(value) : "";
    } else {
      input = el("input");
      // A number is typed in a text field and read by parseNumber (see there).
      input.type = "text";
      if (kind !== "string") {
        input.inputMode = kind === "integer" ? "numeric" : "decimal";
        input.autocomplete = "off";
        input.spellcheck = false;
      }
      input.value = value !== undefined && value !== null ? String(value) : "";
    }
    const kept = mine.get(key);
    if (kept && kept.kind === kind) {
      if (kind === "boolean") input.checked = kept.value; else input.value = kept.value;
    }
    // A value set from a script leaves the caret at its end, and a textarea focused later (the
    // form's first field) scrolls there: it opens at its start instead.
    if (input.tagName === "TEXTAREA") input.setSelectionRange(0, 0);
    const keep = () => mine.set(key, { kind, value: kind === "boolean" ? input.checked : input.value });
    input.addEventListener("input", keep);
    input.addEventListener("change", keep);
    input.id = id;
    input.name = key;
    if (required.has(key)) input.setAttribute("aria-required", "true");
    const error = el("span", "error");
    error.id = id + "-error";
    const described = [error.id];
    wrap.append(label);
    const hintText = [s.description, kind === "json" ? jsonHint(s) : null].filter(Boolean).join(" — ");
    if (hintText) {
      const hint = el("span", "hint muted", hintText);
      hint.id = id + "-hint";
      described.push(hint.id);
      if (kind === "boolean") wrap.append(input, hint); else wrap.append(hint, input);
    } else {
      wrap.append(input);
    }
    input.setAttribute("aria-describedby", described.join(" "));
    wrap.append(error);
    box.append(wrap);
    const f = { key, schema: s, kind, input, error, required: required.has(key) };
    input.addEventListener("input", () => { if (input.getAttribute("aria-invalid") === "true") checkField(f); });
    formFields.push(f);
  });
}

function fieldError(f, msg) {
  f.error.textContent = msg || "";
  if (msg) f.input.setAttribute("aria-invalid", "true"); else f.input.removeAttribute("aria-invalid");
  return msg || "";
}

// The field's value, or {error}; `undefined` for an empty optional field.
function fieldValue(f) {
  const s = f.schema;
  const raw = f.kind === "boolean" ? null : f.input.value;
  if (f.kind === "boolean") return { value: f.input.checked };
  if (raw.trim() === "" && f.kind !== "string") {
    return f.required ? { error: "required" } : { value: undefined };
  }
  if (f.kind === "string") {
    if (raw === "") return f.required ? { error: "required" } : { value: undefined };
    if (typeof s.minLength === "number" && raw.length < s.minLength) return { error: "at least " + s.minLength + " characters" };
    if (typeof s.maxLength === "number" && raw.length > s.maxLength) return { error: "at most " + s.maxLength + " characters" };
    if (typeof s.pattern === "string") {
      try { if (!new RegExp(s.pattern, "u").test(raw)) return { error: "does not match the pattern " + s.pattern }; } catch (_) { /* the server checks */ }
    }
    return { value: raw };
  }
  if (f.kind === "enum") return { value: JSON.parse(raw) };
  if (f.kind === "integer" || f.kind === "number") {
    const parsed = parseNumber(raw, f.kind === "integer");
    if (parsed.error) return parsed;
    const n = parsed.value;
    if (typeof s.minimum === "number" && n < s.minimum) return { error: "at least " + s.minimum };
    if (typeof s.maximum === "number" && n > s.maximum) return { error: "at most " + s.maximum };
    return { value: n };
  }
  let v;
  try { v = JSON.parse(raw); } catch (e) { return { error: "not valid JSON (" + jsonHint(s) + "): " + e.message }; }
  const t = schemaType(s);
  if (t === "array" && !Array.isArray(v)) return { error: "a JSON list, like [1, 2]" };
  if (t === "object" && (v === null || typeof v !== "object" || Array.isArray(v))) return { error: "a JSON object, like {\"a\": 1}" };
  return { value: v };
}

function checkField(f) {
  const r = fieldValue(f);
  fieldError(f, r.error);
  return r;
}

// The form field a path of the server's (`lines[0].qty`, `user.age`: docs/api.md, invalid_input)
// is in: the longest key the path starts with, as a whole segment (a key may hold a dot).
function fieldOfPath(path) {
  if (typeof path !== "string") return null;
  let found = null;
  for (const f of formFields) {
    const k = f.key;
    const inside = path === k || path.startsWith(k + ".") || path.startsWith(k + "[");
    if (inside && (!found || k.length > found.key.length)) found = f;
  }
  return found;
}

// Marks the fields a refused trigger's diagnostics name, as the form's own checks mark them
// (a problem inside a list or object says where: `lines[0].qty: …`); returns the first one in
// the form's order, or null when none is the form's.
function markRefusedFields(body) {
  const d = body && body.diagnostics;
  if (!Array.isArray(d) || body.error !== "invalid_input") return null;
  const problems = new Map();
  for (const x of d) {
    const f = fieldOfPath(x && x.field);
    if (!f) continue;
    const text = (x.field === f.key ? "" : x.field + ": ") + (x.message || "refused by the server");
    problems.set(f, (problems.has(f) ? problems.get(f) + "; " : "") + text);
  }
  for (const [f, text] of problems) fieldError(f, text);
  const first = formFields.find((f) => problems.has(f));
  return first ? first.input : null;
}

async function runSelected(ev) {
  if (ev) ev.preventDefault();
  const w = selectedWorkflow;
  if (!w || starting || runBlocker(w)) return;
  $("run-message").textContent = "";
  const trigger = {};
  let firstBad = null;
  for (const f of formFields) {
    const r = checkField(f);
    if (r.error) { if (!firstBad) firstBad = f; continue; }
    if (r.value !== undefined) trigger[f.key] = r.value;
  }
  if (firstBad) {
    $("run-message").textContent = "fix the marked field" + (formFields.filter((f) => f.error.textContent).length > 1 ? "s" : "") + " first; nothing was started";
    firstBad.input.focus();
    return;
  }
  const extra = runOptions();
  if (extra === null) {
    $("run-message").textContent = "fix the cost limit first; nothing was started";
    $("run-options").open = true;
    $("max-cost").focus();
    return;
  }
  starting = true;
  updateRunButton();
  try {
    const r = await api("POST", "/api/workflows/" + encodeURIComponent(w.id) + "/executions", Object.assign({ trigger }, extra));
    if (r.status !== 202 && r.status !== 200) {
      $("run-message").textContent = errorText(r.body, r.status);
      // Run, which had the focus, was disabled meanwhile (the focus fell to the page): it goes to
      // what to fix, the first field the server named, else to the message.
      const marked = markRefusedFields(r.body);
      (marked || $("run-message")).focus();
      return;
    }
    follow(r.body.id, true);
    refreshHistory();
  } finally {
    starting = false;
    updateRunButton();
  }
}
