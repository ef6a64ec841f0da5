// ---- history: filters, paging, live refresh from GET /api/events ----
const PAGE_SIZE = 20;
let historyCursor = null;
let historyTimer = null;
let feed = null; // {abort}
// The row whose "Yes, delete" is showing: a live refresh leaves it as it is, where it is (rebuilt,
// the question would be gone and the focus lost), and updates the others.
let confirming = null;

// The most rows the API gives at once (`limit`, docs/api.md): a live refresh keeps up to this
// many of the rows shown.
const MOST_ROWS = 500;
// List loads asked for (filter loads and live refreshes), and filter loads alone: an answer
// that a later one made stale is dropped (see loadHistory).
let loadSeq = 0;
let filterSeq = 0;
// The filters the rows shown were listed under.
let listedUnder = null;
// A "Load more" is being answered.
let loadingMore = false;

// The history filters as the user set them (the "started" choice, not the time it gives now).
function filterKey() {
  return JSON.stringify([$("f-workflow").value, $("f-status").value, $("f-since").value, $("f-id").value.trim().toLowerCase()]);
}

function historyQuery(cursor, limit) {
  const q = new URLSearchParams();
  q.set("limit", String(limit || PAGE_SIZE));
  // Sub-workflow executions are listed in their parent's view.
  q.set("top_level", "true");
  const wf = $("f-workflow").value;
  if (wf) q.set("workflow", wf);
  const st = $("f-status").value;
  if (st) q.set("status", st);
  const since = Number($("f-since").value);
  if (since) q.set("since", String(Date.now() - since));
  const id = $("f-id").value.trim().toLowerCase();
  if (id) q.set("id", id);
  if (cursor) q.set("cursor", cursor);
  return "/api/executions?" + q.toString();
}

// `more`: the next page, after the rows shown. `live`: the rows shown brought up to date (an
// execution started, ended or was deleted), as many as are shown (up to MOST_ROWS), in place:
// the rows that did not change stay the same elements, so the one with focus keeps it, and
// "Load more" pages stay loaded. Otherwise (a filter changed) the first page, anew; so is a
// live refresh of rows listed under other filters.
async function loadHistory(more, live) {
  if (more) {
    // One at a time: a double click would ask for the same page twice.
    if (loadingMore) return;
    loadingMore = true;
    try { return await loadHistoryNow(true, false); } finally { loadingMore = false; }
  }
  return loadHistoryNow(false, live);
}

async function loadHistoryNow(more, live) {
  const list = $("history");
  const key = filterKey();
  if (live && key !== listedUnder) live = false;
  const idText = $("f-id").value.trim();
  if (idText && !/^[0-9a-fA-F]{1,16}$/.test(idText)) {
    loadSeq += 1; // what was asked before is stale
    filterSeq += 1;
    listedUnder = null;
    list.replaceChildren();
    show($("more"), false);
    $("f-id-error").textContent = "an execution id is up to 16 hex digits (0-9, a-f)";
    $("f-id").setAttribute("aria-invalid", "true");
    $("history-count").textContent = "the id filter is not an id";
    return;
  }
  $("f-id-error").textContent = "";
  $("f-id").removeAttribute("aria-invalid");
  const shownIds = () => new Set([...list.querySelectorAll("li[data-id]")].map((li) => li.dataset.id));
  // Live: room for the rows shown and for new ones above them.
  const limit = live ? Math.min(MOST_ROWS, Math.max(PAGE_SIZE, shownIds().size + PAGE_SIZE)) : PAGE_SIZE;
  const seq = more ? loadSeq : ++loadSeq;
  const fseq = more || live ? filterSeq : ++filterSeq;
  const r = await api("GET", historyQuery(more ? historyCursor : null, limit));
  // A list load answered after a later one was asked for is dropped: the later one lists what
  // the filters say now (a live refresh after a filter change is a first page of the new ones).
  // "Load more" answered after the filters changed is of the old ones: dropped too.
  if (!more && seq !== loadSeq) return;
  if (more && (fseq !== filterSeq || key !== listedUnder)) return;
  if (r.status !== 200) {
    if (!more && !live) list.replaceChildren();
    if (!live) list.append(el("li", "bad", errorText(r.body, r.status)));
    return;
  }
  let rows = (r.body && r.body.executions) || [];
  // What is shown now, not when the request went: "Load more" may have added rows meanwhile.
  let had = shownIds();
  // Live, after more new executions than the room asked for: on to the last row shown (or
  // MOST_ROWS), so that no row shown drops off the end.
  const lastShown = [...had].pop();
  let body = r.body;
  while (live && lastShown && body.next_cursor && rows.length < MOST_ROWS && !rows.some((x) => x.id === lastShown)) {
    const next = await api("GET", historyQuery(body.next_cursor, Math.min(MOST_ROWS - rows.length, 100)));
    if (seq !== loadSeq || next.status !== 200) return;
    body = next.body;
    rows = rows.concat(body.executions || []);
  }
  had = shownIds();
  let end = -1;
  if (live) rows.forEach((x, i) => { if (had.has(x.id)) end = i; });
  if (end >= 0 && end < rows.length - 1) {
    // Down to the last row shown before: "Load more" goes on after it, as it would have.
    rows = rows.slice(0, end + 1);
  } else {
    historyCursor = body.next_cursor;
  }
  if (more) {
    // Rows a live refresh brought meanwhile are not listed twice.
    for (const x of rows) if (!had.has(x.id)) list.append(historyRow(x));
  } else {
    mergeRows(list, rows, live);
    listedUnder = key;
  }
  const shown = list.querySelectorAll("li[data-id]").length;
  // Said when the user changed a filter or loaded more, not at every refresh nobody asked for.
  $("history-count").setAttribute("aria-live", live ? "off" : "polite");
  $("history-count").textContent = typeof r.body.total === "number" ? "showing " + shown + " of " + r.body.total : "";
  moreButton(!!historyCursor);
}

// Shows or hides "Load more"; hidden while it has focus (the last page loaded), focus moves to
// the last row rather than to nowhere.
function moreButton(on) {
  const more = $("more");
  if (!on && document.activeElement === more) {
    const rows = $("history").querySelectorAll("li[data-id] .open");
    if (rows.length) rows[rows.length - 1].focus();
  }
  show(more, on);
}

// What a row shows: a row whose summary is unchanged is kept as it is.
function rowSignature(x) { return JSON.stringify(x); }

// `list` made to show `rows`, in their order: unchanged rows kept (and the focus in them), changed
// ones rebuilt with the focus moved to the same control, the rest removed — focus, if it was in
// one, to the row now at its place. `live`: a refresh nobody asked for, which leaves alone a
// row whose delete question is showing (where it is, even if the answer no longer lists it).
function mergeRows(list, rows, live) {
  const active = document.activeElement;
  const focusedRow = active && list.contains(active) ? active.closest("li") : null;
  const control = focusedRow && active !== focusedRow ? (active.getAttribute("aria-label") || active.textContent) : null;
  const wanted = new Set(rows.map((x) => x.id));
  const held = (li) => live && li === confirming;
  const old = new Map();
  let focusAt = -1;
  [...list.children].forEach((li, i) => {
    if (li.dataset.id && (wanted.has(li.dataset.id) || held(li))) { old.set(li.dataset.id, li); return; }
    if (li === focusedRow) focusAt = i;
    li.remove();
  });
  let prev = null;
  for (const x of rows) {
    let li = old.get(x.id);
    const sig = rowSignature(x);
    if (!li || (li.dataset.sig !== sig && !held(li))) {
      const fresh = historyRow(x);
      fresh.dataset.sig = sig;
      if (li) {
        li.replaceWith(fresh);
        if (li === focusedRow) refocus(fresh, control);
      }
      li = fresh;
    }
    // A held row the answer no longer lists stays where it is: the rows go around it, and
    // nothing with the focus is moved (a moved element loses it).
    let at = prev ? prev.nextElementSibling : list.firstElementChild;
    while (at && at !== li && held(at) && !wanted.has(at.dataset.id)) at = at.nextElementSibling;
    if (at !== li) list.insertBefore(li, at);
    prev = li;
  }
  if (!rows.length && !list.children.length) list.append(el("li", "muted", "no executions match"));
  if (focusAt >= 0) {
    const now = list.querySelectorAll("li[data-id]");
    if (now.length) refocus(now[Math.min(focusAt, now.length - 1)], null);
    else $("history-heading").focus();
  }
}

// Focus to the control of `li` named `control` (its label or text), else to its open button.
function refocus(li, control) {
  const all = [...li.querySelectorAll("button")];
  const same = control && all.find((b) => (b.getAttribute("aria-label") || b.textContent) === control);
  (same || li.querySelector(".open") || li).focus();
}

function refreshHistory() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => {
    loadHistory(false, true);
  }, 200);
}

// The question on `li` is asked (`li`) or answered (null): after an answer, the row is brought up
// to date with the others.
function confirmingDelete(li) {
  confirming = li;
  if (!li) refreshHistory();
}

function historyRow(x) {
  const li = el("li");
  li.dataset.id = x.id;
  li.dataset.status = x.status;
  const open = el("button", "open");
  open.type = "button";
  const icon = el("span", "icon");
  setIcon(icon, x.status);
  open.append(icon, " ", el("strong", null, x.workflow_name || x.workflow_id), " ", el("span", "muted mono", x.id.slice(0, 8)));
  const when = x.started_at ? new Date(x.started_at).toLocaleString() : "";
  const cost = [formatTokens(x.input_tokens, x.output_tokens), formatCost(x.cost_usd)].filter(Boolean).join(" · ");
  open.append(el("span", "muted small-text", " " + [x.status, when, typeof x.duration_ms === "number" ? formatMs(x.duration_ms) : "", x.relation ? x.relation + " of " + (x.parent_id || "").slice(0, 8) : "", cost].filter(Boolean).join(" · ")));
  open.addEventListener("click", () => follow(x.id, true));
  li.append(open);
  const ended = !["running", "queued"].includes(x.status);
  if (ended) {
    const actions = el("div", "row");
    const short = x.id.slice(0, 8);
    actions.append(button("Re-run", "small", () => againFromRow(x.id, "rerun"), "Re-run " + short));
    if (x.status !== "success") actions.append(button("Resume", "small", () => againFromRow(x.id, "resume"), "Resume " + short));
    const del = button("Delete", "small", () => {
      show(del, false);
      confirmingDelete(li);
      const yes = button("Yes, delete " + short, "small", async () => {
        confirmingDelete(null);
        const r = await deleteExecution(x.id);
        if (r.status !== 200) actions.append(el("span", "bad", errorText(r.body, r.status)));
        else say("deleted execution " + short);
        if (current && current.id === x.id && r.status === 200) closeExecution();
      });
      const no = button("Cancel", "small", () => { yes.remove(); no.remove(); show(del, true); del.focus(); confirmingDelete(null); });
      actions.append(yes, no);
      yes.focus();
    }, "Delete " + short);
    actions.append(del);
    li.append(actions);
  }
  return li;
}

async function againFromRow(id, kind) {
  const r = await api("POST", "/api/executions/" + encodeURIComponent(id) + "/" + kind, {});
  if (r.status !== 202 && r.status !== 200) { say(errorText(r.body, r.status), true); return; }
  follow(r.body.id, true);
  refreshHistory();
}

// The server-wide stream: an execution that starts, ends or is deleted refreshes the list.
async function followFeed() {
  if (feed) feed.abort.abort();
  const me = { abort: new AbortController() };
  feed = me;
  let failures = 0;
  while (feed === me && token()) {
    let resp = null;
    try { resp = await openEvents("/api/events", null, me.abort.signal); } catch (_) { if (me.abort.signal.aborted) return; }
    if (resp && resp.status === 401) { $("live-status").textContent = ""; return; }
    if (resp && resp.status === 200) {
      failures = 0;
      $("live-status").textContent = "live";
      refreshHistory();
      try {
        await readEvents(resp, (kind, data) => {
          if (feed !== me) return false;
          // The list leaves out flowrun test's executions: a CI run's cases change nothing in it.
          if (!(data && data.mode === "test-suite")) refreshHistory();
          return true;
        });
      } catch (_) { if (me.abort.signal.aborted) return; }
    }
    if (feed !== me) return;
    failures += 1;
    $("live-status").textContent = "live updates lost — retrying";
    await sleep(Math.min(1000 * failures, 5000));
  }
}
