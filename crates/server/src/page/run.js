// ---- one execution: every planned step, live, and what it produced ----
const MAX_LOG_LINES = 2000;
let current = null;

function newExec(id) {
  return { id, abort: new AbortController(), rows: new Map(), order: [], ended: false, lastId: null, status: "queued",
    startedAt: null, logs: [], record: null, refreshTimer: null, panelNode: null };
}

function nodeRow(exec, id, info) {
  let row = exec.rows.get(id);
  if (row) {
    if (info && info.name && row.nameEl.textContent === id) { row.nameEl.textContent = info.name; row.idEl.textContent = id; }
    if (info && info.type) row.type = info.type;
    return row;
  }
  const li = el("li", "node");
  const head = el("div", "head");
  const open = el("button", "open");
  open.type = "button";
  const icon = el("span", "icon");
  const step = el("span", "step");
  const nameEl = el("span", "name", info && info.name ? info.name : id);
  const idEl = el("span", "muted mono small-text", info && info.name ? id : "");
  const label = el("span", "muted small-text");
  open.append(step, icon, nameEl, idEl, label);
  const meta = el("span", "meta");
  const tokens = el("span", "tokens");
  const dur = el("span", "dur");
  meta.append(tokens, dur);
  head.append(open, meta);
  const stream = el("div", "stream hidden");
  stream.setAttribute("aria-live", "off");
  stream.setAttribute("aria-label", "Streamed answer");
  const preview = el("div", "preview muted");
  const err = el("div", "err bad");
  li.append(head, stream, preview, err);
  $("nodes").append(li);
  exec.order.push(id);
  step.textContent = exec.order.length + ".";
  row = { id, li, open, icon, nameEl, idEl, label, tokens, dur, stream, preview, err, status: "pending",
    type: info && info.type, started: null, logs: [], parts: null };
  setIcon(icon, "pending");
  open.addEventListener("click", () => openPanel(id));
  exec.rows.set(id, row);
  return row;
}

function setRowStatus(row, status) {
  row.status = status;
  setIcon(row.icon, status);
  row.li.classList.toggle("current", status === "running");
  if (status === "running") row.li.setAttribute("aria-current", "step"); else row.li.removeAttribute("aria-current");
}

// Steps that ended without running this time (docs/events.md: attempt 0): a branch not taken,
// an output pinned or reused from the execution resumed. Each is counted apart, not as ran.
const NOT_RUN = ["skipped", "reused", "pinned"];

function updateStep(exec) {
  const rows = [...exec.rows.values()];
  const total = exec.order.length;
  const begun = rows.filter((r) => r.status !== "pending").length;
  const running = rows.filter((r) => r.status === "running");
  let text = "";
  if (!exec.ended && total) {
    const at = running.length ? exec.order.indexOf(running[0].id) + 1 : Math.min(begun + 1, total);
    text = "step " + at + " of " + total + (running.length > 1 ? " (" + running.length + " running)" : "");
  } else if (total) {
    const apart = NOT_RUN.map((s) => [s, rows.filter((r) => r.status === s).length]).filter(([, n]) => n > 0);
    const ran = begun - apart.reduce((sum, [, n]) => sum + n, 0);
    text = ran + " of " + total + " steps ran" + apart.map(([s, n]) => ", " + n + " " + s).join("");
  }
  $("ex-step").textContent = text;
}

function tick() {
  const exec = current;
  if (!exec) return;
  const now = Date.now();
  for (const row of exec.rows.values()) {
    if (row.status === "running" && row.started) row.dur.textContent = formatMs(now - row.started) + "…";
  }
  // Once ended, the status says how long it took (the execution's own duration; one cancelled
  // while queued never ran and has none); the time between its first and last events, a
  // millisecond apart from it, would be a second figure.
  if (exec.ended) $("ex-elapsed").textContent = "";
  else if (exec.startedAt) $("ex-elapsed").textContent = formatMs(now - exec.startedAt);
}
setInterval(tick, 250);

function setStatus(exec, status, text) {
  exec.status = status;
  const s = $("ex-status");
  s.replaceChildren();
  const icon = el("span", "icon");
  setIcon(icon, status);
  s.append(icon, " ", el("strong", null, text || status));
  updateActions(exec);
}

function updateActions(exec) {
  const running = !exec.missing && (exec.status === "running" || exec.status === "queued");
  const ended = !exec.missing && (exec.ended || !running);
  const hadFocus = $("ex-actions").contains(document.activeElement);
  show($("stop-button"), running && !exec.ended);
  show($("pause-button"), running && !exec.ended && !!state.features.pause);
  show($("rerun-button"), ended && exec.status !== "pending");
  show($("resume-button"), ended && ["error", "timeout", "cancelled", "interrupted", "paused"].includes(exec.status));
  show($("delete-button"), ended && exec.status !== "pending");
  if (ended && $("action-message").dataset.pending) {
    $("action-message").textContent = "";
    delete $("action-message").dataset.pending;
  }
  // The button pressed (Stop, Pause) may go with the state it belonged to. The focus then moves
  // to the status, which says how the execution ended, not to the page's start — and not to an
  // action that took the button's place: Re-run or Resume under a second Enter started a new
  // run. The actions are a Tab away. (A hidden button keeps the focus until the next rendering
  // takes it away: asked directly.)
  const active = document.activeElement;
  if (hadFocus && (active.classList.contains("hidden") || !$("ex-actions").contains(active))) {
    $("ex-status").focus();
  }
}

async function refreshRecord(exec) {
  const r = await api("GET", "/api/executions/" + encodeURIComponent(exec.id));
  if (r.status !== 200 || exec !== current) return r;
  exec.record = r.body;
  for (const p of r.body.plan || []) nodeRow(exec, p.id, p);
  for (const n of r.body.nodes || []) {
    const row = nodeRow(exec, n.node_id);
    const out = n.output;
    if (out && typeof out === "object" && out.usage) {
      const t = formatTokens(out.usage.input_tokens, out.usage.output_tokens);
      row.tokens.textContent = [t, formatCost(out.cost_usd)].filter(Boolean).join(" · ");
    }
  }
  const b = r.body;
  showFamily(b);
  $("ex-totals").textContent = [formatTokens(b.input_tokens, b.output_tokens), formatCost(b.cost_usd)].filter(Boolean).join(" · ");
  if (exec.panelNode) fillPanel(exec, exec.panelNode);
  updateStep(exec);
  return r;
}

// The executions a `workflow` node started (each one opens like any other), and the parent of
// a sub-workflow's execution.
function showFamily(b) {
  const list = $("ex-children");
  list.replaceChildren();
  for (const c of b.children || []) {
    const li = el("li");
    const icon = el("span", "icon");
    setIcon(icon, c.status);
    const where = c.parent_node + (c.parent_item !== null && c.parent_item !== undefined ? "[" + c.parent_item + "]" : "");
    const open = button(where + " → " + (c.workflow_name || c.workflow_id) + " " + c.id.slice(0, 8), "open", () => follow(c.id));
    li.append(icon, " ", open);
    list.append(li);
  }
  show($("children-panel"), (b.children || []).length > 0);
  // And the way back from a re-run or resume, and on from an execution re-run or resumed (a
  // paused one stays paused once resumed: this says where it went on).
  const parent = $("ex-parent");
  parent.replaceChildren();
  const open = (id) => button(id.slice(0, 8), "small", () => follow(id), "open execution " + id);
  if (b.relation === "sub" && b.parent_id) {
    parent.append("Called by node '" + b.parent_node + "' of ", open(b.parent_id));
  } else if (b.parent_id && (b.relation === "resume" || b.relation === "rerun")) {
    parent.append((b.relation === "resume" ? "Resume" : "Re-run") + " of ", open(b.parent_id));
  }
  for (const [relation, label] of [["resume", "Resumed as "], ["rerun", "Re-run as "]]) {
    const later = (b.later_runs || []).filter((x) => x.relation === relation);
    if (!later.length) continue;
    if (parent.childNodes.length) parent.append(" · ");
    parent.append(label);
    later.forEach((x, i) => parent.append(i ? ", " : "", open(x.id), " " + x.status));
  }
  show(parent, parent.childNodes.length > 0);
}

function refreshSoon(exec) {
  clearTimeout(exec.refreshTimer);
  exec.refreshTimer = setTimeout(() => refreshRecord(exec), 300);
}

function addLog(exec, node, line) {
  const list = node && exec.rows.has(node) ? exec.rows.get(node).logs : exec.logs;
  if (list.length < MAX_LOG_LINES) list.push(line);
  else if (list.length === MAX_LOG_LINES) list.push("… more lines in `flowrun logs " + exec.id.slice(0, 8) + "`");
  if (!node) {
    const pre = $("ex-logs");
    show(pre, true);
    pre.textContent = exec.logs.join("\n");
  } else if (exec.panelNode === node) {
    $("panel-logs").textContent = list.join("\n");
  }
}

function errorLine(e) {
  return e ? (e.node ? "node '" + e.node + "': " : "") + (e.type ? e.type + ": " : "") + (e.message || "") : "";
}

function handle(exec, kind, d) {
  switch (kind) {
    case "execution_start":
      $("ex-title").textContent = d.workflow_name || d.workflow_id || "";
      for (const n of d.nodes || []) nodeRow(exec, n);
      exec.startedAt = d.ts || Date.now();
      setStatus(exec, "running");
      break;
    case "node_start": {
      const row = nodeRow(exec, d.node);
      if (d.item !== undefined || d.iteration !== undefined) {
        if (d.iteration !== undefined) row.label.textContent = " iteration " + d.iteration;
        break;
      }
      setRowStatus(row, "running");
      row.started = d.ts || Date.now();
      row.parts = typeof d.items === "number" ? { done: 0, total: d.items } : null;
      row.label.textContent = row.parts ? " 0/" + row.parts.total + " items" : d.attempt > 1 ? " attempt " + d.attempt : "";
      row.stream.textContent = "";
      show(row.stream, false);
      if (!exec.replaying) row.li.scrollIntoView({ block: "nearest" });
      break;
    }
    case "node_delta": {
      const row = nodeRow(exec, d.node);
      if (d.so_far) row.stream.textContent = d.text; else row.stream.append(d.text);
      show(row.stream, true);
      break;
    }
    case "node_end": {
      const row = nodeRow(exec, d.node);
      if (d.item !== undefined || d.iteration !== undefined) {
        if (d.item !== undefined && row.parts && !d.retrying) {
          row.parts.done += 1;
          row.label.textContent = " " + row.parts.done + "/" + row.parts.total + " items";
        }
        if (d.error) row.err.textContent = (d.item !== undefined ? "item " + d.item : "iteration " + d.iteration) + ": " + errorLine(d.error);
        break;
      }
      setRowStatus(row, d.retrying ? "running" : d.status);
      if (!row.parts) row.label.textContent = d.retrying ? " " + d.status + ", retrying" : ["success", "error"].includes(d.status) && !d.reason ? "" : " " + d.status + (d.reason ? " (" + d.reason + ")" : "");
      row.dur.textContent = d.status === "skipped" ? "" : formatMs(d.duration_ms);
      row.preview.textContent = d.output_preview && row.stream.classList.contains("hidden") ? d.output_preview : "";
      row.err.textContent = errorLine(d.error);
      if (row.type === "llm" || exec.panelNode === d.node) refreshSoon(exec);
      break;
    }
    case "log": {
      const line = (d.stream === "log" && d.level ? "[" + d.level + "] " : d.stream === "stderr" ? "! " : "") + (d.line || "");
      addLog(exec, d.node, line);
      break;
    }
    case "execution_end": {
      exec.ended = true;
      for (const row of exec.rows.values()) {
        if (row.status === "running") setRowStatus(row, d.status);
        // A step that never started will not now: said so, not left "pending".
        else if (row.status === "pending") setIcon(row.icon, "not run");
      }
      setStatus(exec, d.status, d.status + (typeof d.duration_ms === "number" ? " in " + formatMs(d.duration_ms) : ""));
      $("ex-error").textContent = errorLine(d.error);
      if (d.output !== undefined) {
        show($("output-panel"), true);
        $("ex-output").textContent = isTruncated(d.output) ? truncatedNote(d.output) + "\n\n" + d.output.preview : pretty(d.output);
      }
      refreshRecord(exec);
      tick();
      break;
    }
  }
  updateStep(exec);
}

async function follow(id, fresh) {
  if (current) current.abort.abort();
  const exec = newExec(id);
  current = exec;
  placeInUrl();
  show($("execution"), true);
  show($("panel"), false);
  for (const x of ["nodes", "ex-logs", "ex-output"]) $(x).replaceChildren();
  for (const x of ["ex-error", "action-message", "ex-title", "ex-step", "ex-elapsed", "ex-totals", "ex-connection", "copy-message"]) $(x).textContent = "";
  delete $("action-message").dataset.pending;
  show($("ex-logs"), false);
  show($("output-panel"), false);
  show($("confirm-delete"), false);
  $("ex-id").textContent = id;
  setStatus(exec, "queued", "waiting…");
  if (fresh) {
    $("execution").scrollIntoView({ block: "start" });
    // What was pressed (Run, Re-run, a history row) is disabled or rebuilt: the focus goes to
    // what it opened, a Tab away from its actions.
    $("ex-heading").focus({ preventScroll: true });
  }
  const first = await refreshRecord(exec);
  if (first.status === 404 || (first.status && first.status !== 200 && first.status !== 401)) {
    // Not there: nothing to act on (no Re-run, Resume or Delete), and not kept in the address
    // (a reload would only say it again).
    if (first.status === 404) {
      exec.missing = true;
      placeInUrl();
    }
    setStatus(exec, "error", errorText(first.body, first.status));
    exec.ended = true;
    updateActions(exec);
    return;
  }
  if (first.body && first.body.status && !["running", "queued"].includes(first.body.status)) exec.replaying = true;
  const url = "/api/executions/" + encodeURIComponent(id) + "/events";
  let failures = 0;
  while (!exec.ended && current === exec) {
    let resp = null;
    try {
      resp = await openEvents(url, exec.lastId, exec.abort.signal);
    } catch (e) {
      if (exec.abort.signal.aborted) return;
    }
    if (resp) {
      // A 401 says nothing about the execution: it is not shown as failed.
      if (resp.status === 401) {
        tokenRefused();
        exec.needsToken = true;
        setStatus(exec, "pending", "not known: paste the new token to follow it again");
        return;
      }
      state.tokenWorked = true;
      if (resp.status === 204) { exec.ended = true; break; }
      if (resp.status !== 200) {
        let body = null;
        try { body = await resp.json(); } catch (_) { body = null; }
        $("ex-connection").textContent = "cannot follow this execution: " + errorText(body, resp.status);
        return;
      }
      failures = 0;
      $("ex-connection").textContent = "";
      try {
        await readEvents(resp, (kind, data, eid) => {
          if (exec !== current) return false;
          if (eid !== null) exec.lastId = eid;
          if (kind === "end") { exec.ended = true; return false; }
          handle(exec, kind, data);
          return true;
        });
      } catch (e) {
        if (exec.abort.signal.aborted) return;
      }
      exec.replaying = false;
    }
    if (exec.ended || current !== exec) break;
    failures += 1;
    $("ex-connection").textContent = "the connection to the server was lost — retrying (" + failures + ")…";
    await sleep(Math.min(500 * failures, 3000));
  }
  if (current === exec) {
    $("ex-connection").textContent = "";
    updateActions(exec);
  }
}

// ---- the node panel: input, output, error with traceback, logs ----

function openPanel(node) {
  const exec = current;
  if (!exec) return;
  exec.panelNode = node;
  show($("panel"), true);
  fillPanel(exec, node);
  refreshRecord(exec);
  $("panel").focus();
}

function fillPanel(exec, node) {
  const row = exec.rows.get(node);
  const rec = exec.record && (exec.record.nodes || []).find((n) => n.node_id === node);
  $("panel-title").textContent = (row ? row.nameEl.textContent : node) + (row && row.nameEl.textContent !== node ? " (" + node + ")" : "");
  const pending = rec ? rec.status : row ? row.status : "pending";
  // Pending once the execution has ended: it never started.
  const status = pending === "pending" && exec.ended ? "not run" : pending;
  const meta = [status, rec && rec.attempt > 1 ? "attempt " + rec.attempt : "", rec && typeof rec.duration_ms === "number" ? formatMs(rec.duration_ms) : "", row && row.type ? row.type : ""];
  $("panel-meta").textContent = meta.filter(Boolean).join(" · ");
  const waiting = status === "not run" ? "(not run)" : status === "pending" ? "(not started yet)" : status === "running" ? "(running…)" : "(none)";
  $("panel-input").textContent = rec && rec.input !== null && rec.input !== undefined ? shownValue(rec.input) : waiting;
  const out = rec ? rec.output : undefined;
  show($("panel-truncated"), isTruncated(out));
  $("panel-truncated").textContent = isTruncated(out) ? truncatedNote(out) : "";
  $("panel-output").textContent = out !== null && out !== undefined ? shownValue(out) : waiting;
  const e = rec && rec.error;
  show($("panel-error-box"), !!e);
  $("panel-error").textContent = e ? (e.type ? e.type + ": " : "") + (e.message || "") : "";
  $("panel-traceback").textContent = e && e.traceback ? e.traceback : "";
  $("panel-logs").textContent = row && row.logs.length ? row.logs.join("\n") : "(no log lines)";
  const earlier = (rec && rec.earlier_attempts) || [];
  show($("panel-attempts"), earlier.length > 0);
  renderIfChanged($("panel-attempts-list"), [exec.id, node, earlier], (ol) => fillAttempts(ol, earlier, ""));
  const list = (rec && (rec.items || rec.iterations)) || [];
  const shown = list.map((p) => [p.index, p.iteration, p.status, p.attempt, p.error, p.earlier_attempts]);
  // An item opened (or focused) stays so when the same node's list is built again (an item
  // ended), not when another node's takes its place.
  const box = $("panel-parts");
  const same = box.dataset.shows === exec.id + " " + node;
  const opened = new Set(same ? [...box.querySelectorAll("details.part[open] > summary")].map((x) => x.getAttribute("aria-label")) : []);
  const focused = same && box.contains(document.activeElement) && document.activeElement.tagName === "SUMMARY" ? document.activeElement.getAttribute("aria-label") : null;
  renderIfChanged(box, [exec.id, node, shown], (parts) => {
    parts.dataset.shows = exec.id + " " + node;
    if (!list.length) return;
    parts.append(el("h3", null, rec.items ? "Items" : "Iterations"));
    const ul = el("ul", "list");
    for (const p of list) {
      const what = rec.items ? "item " + p.index : "iteration " + p.iteration;
      const li = el("li", null, what + ": " + p.status + (p.attempt > 1 ? " · attempt " + p.attempt : "") + (p.error ? " — " + errorLine(p.error) : ""));
      li.append(partDetails(p, what));
      if (p.earlier_attempts && p.earlier_attempts.length) {
        const ol = el("ol", "attempts");
        ol.setAttribute("aria-label", "Earlier attempts of " + what);
        fillAttempts(ol, p.earlier_attempts, what + ", ");
        li.append(ol);
      }
      ul.append(li);
    }
    parts.append(ul);
    for (const summary of parts.querySelectorAll("details.part > summary")) {
      const label = summary.getAttribute("aria-label");
      if (opened.has(label)) summary.parentElement.open = true;
      if (label === focused) summary.focus();
    }
  });
}

// An item's or iteration's own input, output and traceback, a disclosure away: filled when it is
// first opened (a for_each of thousands of items builds none of them until asked).
function partDetails(p, what) {
  const details = el("details", "part");
  const summary = el("summary", null, "Input and output");
  summary.setAttribute("aria-label", "Input and output of " + what);
  details.append(summary);
  details.addEventListener("toggle", () => {
    if (!details.open || details.dataset.filled) return;
    details.dataset.filled = "1";
    const shown = (label, value) => {
      const pre = el("pre", null, value);
      pre.tabIndex = 0;
      pre.setAttribute("aria-label", label + " of " + what);
      details.append(el("h4", null, label), pre);
    };
    shown("Input", p.input !== null && p.input !== undefined ? shownValue(p.input) : "(none)");
    if (isTruncated(p.output)) details.append(el("p", "muted", truncatedNote(p.output)));
    shown("Output", p.output !== null && p.output !== undefined ? shownValue(p.output) : "(none)");
    if (p.error && p.error.traceback) shown("Traceback", p.error.traceback);
  });
  return details;
}

// A retried node (item, iteration) keeps its last attempt as its row; the record lists the ones
// before it (`earlier_attempts`), and why they failed is often the story (a timeout, then a
// 429, then the error left). One line each, its status in words (not by colour alone), its
// traceback a disclosure away. `what` names the item in the traceback's label ("item 2, ").
function fillAttempts(ol, attempts, what) {
  for (const a of attempts) {
    const li = el("li");
    li.append(["attempt " + a.attempt, a.status, formatMs(a.duration_ms)].filter(Boolean).join(" · "));
    const e = a.error;
    if (e) li.append(" · ", el("span", "bad mono", (e.type ? e.type + ": " : "") + (e.message || "")));
    if (e && e.traceback) {
      const label = "Traceback of " + what + "attempt " + a.attempt;
      const details = el("details");
      const summary = el("summary", null, "Traceback");
      summary.setAttribute("aria-label", label);
      const pre = el("pre", "traceback", e.traceback);
      pre.tabIndex = 0;
      pre.setAttribute("aria-label", label);
      details.append(summary, pre);
      li.append(details);
    }
    ol.append(li);
  }
}

// Rebuilds `box` with `build(box)` only when what it shows (`data`) changed: the record is read
// again at every end of the panel's node and at the execution's end, and rebuilding the same
// lines would close a traceback the user opened and take the focus away from it.
const shownKeys = new WeakMap();

function renderIfChanged(box, data, build) {
  const key = JSON.stringify(data);
  if (shownKeys.get(box) === key) return;
  shownKeys.set(box, key);
  box.replaceChildren();
  build(box);
}

function closePanel() {
  const exec = current;
  show($("panel"), false);
  if (exec && exec.panelNode && exec.rows.has(exec.panelNode)) exec.rows.get(exec.panelNode).open.focus();
  if (exec) exec.panelNode = null;
}

// ---- actions ----

const ACTIONS = { stop: "/stop", pause: "/pause", rerun: "/rerun", resume: "/resume" };

async function action(kind) {
  const exec = current;
  if (!exec) return;
  const msg = $("action-message");
  msg.textContent = "";
  delete msg.dataset.pending;
  const path = "/api/executions/" + encodeURIComponent(exec.id) + ACTIONS[kind];
  const r = await api("POST", path, kind === "stop" ? undefined : {});
  if (kind === "stop" || kind === "pause") {
    const asked = r.status === 200 || r.status === 202;
    // The end may have come before this answer: then there is nothing to wait for.
    const over = exec !== current || exec.ended || !["running", "queued"].includes(exec.status);
    if (asked && over) return;
    msg.textContent = asked ? (kind === "stop" ? "stopping…" : "pausing…") : errorText(r.body, r.status);
    // Cleared when the execution ends (updateActions).
    if (asked) msg.dataset.pending = "1";
    return;
  }
  if (r.status !== 202 && r.status !== 200) { msg.textContent = errorText(r.body, r.status); return; }
  follow(r.body.id, true);
  refreshHistory();
}

// No execution shown: its stream stopped, its view and node panel hidden, none in the address.
function closeExecution() {
  if (current) current.abort.abort();
  current = null;
  show($("execution"), false);
  show($("panel"), false);
  placeInUrl();
}

async function deleteCurrent() {
  const exec = current;
  if (!exec) return;
  const r = await deleteExecution(exec.id);
  show($("confirm-delete"), false);
  if (r.status !== 200) { $("action-message").textContent = errorText(r.body, r.status); return; }
  closeExecution();
  say("execution " + exec.id.slice(0, 8) + " deleted", false);
  // The pane with the focus is gone: on to the history, where the next one is chosen.
  $("history-heading").focus();
}

async function deleteExecution(id) {
  const r = await api("DELETE", "/api/executions/" + encodeURIComponent(id));
  if (r.status === 200) refreshHistory();
  return r;
}

async function copyOutput() {
  const text = $("ex-output").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-message").textContent = "copied";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents($("ex-output"));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    $("copy-message").textContent = "selected: press Ctrl+C to copy";
  }
}
