// ---- start: the token, the features, the lists ----

// The workflow chosen and the execution shown are in the address's fragment
// (`#workflow=ID&execution=ID`): a reload, a bookmark or a link shows them again. Never the
// token (it stays in this tab's session storage).
function placeInUrl() {
  const q = new URLSearchParams();
  if (selectedWorkflow) q.set("workflow", selectedWorkflow.id);
  if (current && !current.missing) q.set("execution", current.id);
  const hash = q.toString() ? "#" + q.toString() : "";
  if (hash !== location.hash) history.replaceState(null, "", location.pathname + location.search + hash);
}

// Shows what the address names, once the workflows are listed: the workflow's form (the focus
// left where it is) and the execution; edited (`hashchange`), what it no longer names is closed.
// Without a token nothing is asked (it is done once the token is given).
function placeFromUrl(e) {
  if (!token()) return;
  const q = new URLSearchParams(location.hash.slice(1));
  if (e && e.type === "hashchange") {
    if (!q.get("execution") && current) closeExecution();
    if (!q.get("workflow") && selectedWorkflow) deselectWorkflow();
  }
  const wf = q.get("workflow");
  if (wf && (!selectedWorkflow || selectedWorkflow.id !== wf)) {
    const w = state.workflows.find((x) => x.id === wf);
    const li = [...$("workflows").children].find((x) => x.dataset.id === wf);
    if (w && li) selectWorkflow(w, li, true);
  }
  const ex = (q.get("execution") || "").toLowerCase();
  if (/^[0-9a-f]{16}$/.test(ex) && (!current || current.id !== ex)) follow(ex, false);
}
window.addEventListener("hashchange", placeFromUrl);

async function start(given) {
  if (!token()) {
    say("paste the token from the token file that `flowrun serve` printed", false);
    return;
  }
  say("", false);
  const info = await api("GET", "/api");
  if (info.status === 200) state.features = (info.body && info.body.features) || {};
  // A token just given is confirmed (the field empties either way), for a few seconds.
  if (given && info.status === 200) {
    say("Connected: the token works.", false);
    setTimeout(() => { if ($("message").textContent.startsWith("Connected")) say("", false); }, 3000);
  }
  loadWorkflows().then(() => placeFromUrl());
  loadHistory(false);
  followFeed();
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("token").value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  state.tokenWorked = false;
  $("token").value = "";
  start(true);
  if (current && current.needsToken) follow(current.id);
});
$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.tokenWorked = false;
  if (feed) feed.abort.abort();
  feed = null;
  closeExecution();
  deselectWorkflow();
  $("workflows").replaceChildren();
  $("history").replaceChildren();
  typed.clear(); // what was typed (a key, perhaps) goes with the token
  start();
});
$("reload").addEventListener("click", loadWorkflows);
$("run-form").addEventListener("submit", runSelected);
$("stop-button").addEventListener("click", () => action("stop"));
$("pause-button").addEventListener("click", () => action("pause"));
$("rerun-button").addEventListener("click", () => action("rerun"));
$("resume-button").addEventListener("click", () => action("resume"));
$("delete-button").addEventListener("click", () => { show($("confirm-delete"), true); $("confirm-yes").focus(); });
$("confirm-yes").addEventListener("click", deleteCurrent);
$("confirm-no").addEventListener("click", () => { show($("confirm-delete"), false); $("delete-button").focus(); });
// The skip links: the run form and the execution come after the workflows and the whole history
// (three stops a row), so from the top of the page a link goes past them. The focus goes where
// the work is: the form's first field, the execution's heading (its actions a Tab away).
$("skip-run").addEventListener("click", (e) => {
  e.preventDefault();
  $("run").scrollIntoView({ block: "start" });
  focusRunForm();
});
$("skip-execution").addEventListener("click", (e) => {
  e.preventDefault();
  $("execution").scrollIntoView({ block: "start" });
  $("ex-heading").focus({ preventScroll: true });
});
$("copy-output").addEventListener("click", copyOutput);
$("panel-close").addEventListener("click", closePanel);
// Escape closes the node panel wherever the focus is (a Tab may have taken it out of the panel),
// except in a field one types in, where Escape belongs to the field (a search clears itself).
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || e.defaultPrevented || $("panel").classList.contains("hidden")) return;
  if (isTextField(document.activeElement)) return;
  e.preventDefault();
  closePanel();
});
$("more").addEventListener("click", () => loadHistory(true));
$("filters").addEventListener("submit", (e) => { e.preventDefault(); loadHistory(false); });
for (const id of ["f-workflow", "f-status", "f-since"]) $(id).addEventListener("change", () => loadHistory(false));
// The id filter as it is typed: a first page under it, once the typing pauses.
let idTyping = null;
$("f-id").addEventListener("input", () => {
  clearTimeout(idTyping);
  idTyping = setTimeout(() => loadHistory(false), 250);
});
start();
