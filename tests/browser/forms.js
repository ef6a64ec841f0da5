// The run form and the history list as a new user found them wanting: numbers the browser could
// not read dropped without a word, a live refresh taking the focus away, the narrow layout
// scrolling past a new execution, typed values lost on choosing the workflow again. Run through
// scenarios.js (node scenarios.js NAME CONFIG) by the tests in tests/it/page_browser.rs.
"use strict";
const fs = require("fs");
const path = require("path");
const { config, browser, open, check, text, api, selectWorkflow, waitStatus, count } = require("./lib");

module.exports = {
  // What a number field cannot read is refused, said, and kept as typed; nothing starts.
  async numbers() {
    const b = await browser();
    const { page } = b;
    await open(page);
    await selectWorkflow(page, "Greeter");
    await page.fill("#in-0", "Ada");
    const before = await count("greet");
    // Each refused with why, and kept as typed: what the browser cannot read, and what the page
    // cannot send as typed (too large, too small, a fraction that reads as a whole number).
    for (const [typed, why] of [["1e400", "too large a number"], ["0,5", "not a whole number"], ["1e", "not a whole number"],
      ["-", "not a whole number"], ["0x10", "not a whole number"], ["٣", "digits 0-9"], ["2.5", "a whole number"],
      ["2.9999999999999999", "a whole number"], ["9007199254740993", "too large a whole number"], ["1e-400", "too small"]]) {
      await page.fill("#in-1", typed);
      await page.click("#run-button");
      await page.waitForSelector("#in-1[aria-invalid=true]");
      check((await text(page, "#in-1-error")).includes(why), typed + ": " + (await text(page, "#in-1-error")));
      check((await page.inputValue("#in-1")) === typed, typed + " is kept as typed");
    }
    // Written otherwise, a whole number all the same.
    await page.fill("#in-1", " 2e1 ");
    await page.click("#run-button");
    await waitStatus(page, "success");
    check((await text(page, "#ex-output")).includes("Hello, Ada x20"), "2e1 is 20: " + (await text(page, "#ex-output")));
    await page.fill("#in-1", "3");
    await page.click("#run-options summary");
    for (const typed of ["0,5", "1e", "-", "1e400"]) {
      await page.fill("#max-cost", typed);
      await page.click("#run-button");
      check((await text(page, "#cost-error")).includes("0 or more"), "cost " + typed + ": " + (await text(page, "#cost-error")));
      check((await page.inputValue("#max-cost")) === typed, "cost " + typed + " is kept as typed");
    }
    check((await count("greet")) === before + 1, "nothing else was started");
    // The one alert is the form's; the field's error is read with the field.
    check((await page.locator("[role=alert]:not(:empty)").count()) === 1, "one alert, not two");
    await page.fill("#max-cost", "0.5");
    await page.click("#run-button");
    await page.waitForFunction(() => document.querySelector("#ex-output").textContent.includes("Hello, Ada x3"))
      .catch(() => { throw new Error("a valid number runs"); });
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },

  // A live refresh of the history (an execution started elsewhere) keeps the focus on the row
  // it was on, and the rows "Load more" added; a deleted row's focus goes to its neighbour.
  async live_history() {
    for (let i = 0; i < 23; i++) {
      const r = await api("POST", "/api/workflows/greet/executions?wait=true", { trigger: { name: "n" + i } });
      check(r.status === 200, "run " + i + ": " + r.status);
    }
    const b = await browser();
    const { page } = b;
    await open(page);
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 20 of 23");
    await page.click("#more");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 23 of 23");
    check(await page.isHidden("#more"), "no more to load");
    const third = await page.evaluate(() => document.querySelectorAll("#history li[data-id]")[2].dataset.id);
    await page.focus(`#history li[data-id="${third}"] button.open`);
    const r = await api("POST", "/api/workflows/greet/executions?wait=true", { trigger: { name: "late" } });
    check(r.status === 200, "another run");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 24 of 24");
    const after = await page.evaluate(() => {
      const a = document.activeElement;
      const li = a && a.closest("#history li");
      return { id: li && li.dataset.id, open: a && a.classList.contains("open"), rows: document.querySelectorAll("#history li[data-id]").length };
    });
    check(after.id === third && after.open, "the focus stayed on the row: " + JSON.stringify(after));
    check(after.rows === 24, "the loaded rows stayed: " + after.rows);
    // Deleted from its row: the focus goes to the next row, and the deletion is said.
    const next = await page.evaluate((id) => document.querySelector(`#history li[data-id="${id}"]`).nextElementSibling.dataset.id, third);
    await page.focus(`#history li[data-id="${third}"] button[aria-label^="Delete"]`);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.activeElement && document.activeElement.textContent.startsWith("Yes, delete"));
    await page.keyboard.press("Enter");
    await page.waitForFunction((id) => !document.querySelector(`#history li[data-id="${id}"]`), third);
    await page.waitForFunction((id) => {
      const li = document.activeElement && document.activeElement.closest("#history li");
      return li && li.dataset.id === id;
    }, next, { timeout: 5000 }).catch(async () => {
      throw new Error("the focus is not on the next row: " + (await page.evaluate(() => document.activeElement.outerHTML.slice(0, 200))));
    });
    check((await text(page, "#message")).includes("deleted execution " + third.slice(0, 8)), "the deletion is said");
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },

  // More executions than two pages: "Load more" after a live refresh goes on where the list
  // ends (no row twice, none skipped), a double click loads one page, and the id filter lists
  // what it says, all of it reachable again once cleared.
  async history_pages() {
    const made = [];
    for (let i = 0; i < 45; i++) {
      const r = await api("POST", "/api/workflows/greet/executions?wait=true", { trigger: { name: "p" + i } });
      check(r.status === 200, "run " + i);
      made.push(r.body.id);
    }
    const all = () => page.evaluate(() => [...document.querySelectorAll("#history li[data-id]")].map((li) => li.dataset.id));
    const contiguous = async (n) => {
      const ids = await all();
      const want = (await api("GET", "/api/executions?top_level=true&limit=" + n)).body.executions.map((x) => x.id);
      check(JSON.stringify(ids) === JSON.stringify(want), "the newest " + n + " in order, once each: " + ids.length + " shown");
    };
    const b = await browser();
    const { page } = b;
    await open(page);
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 20 of 45");
    await page.dblclick("#more");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent.startsWith("showing 40 of"));
    await page.waitForTimeout(300); // a second page, had the double click asked for one
    await contiguous(40);
    const r = await api("POST", "/api/workflows/greet/executions?wait=true", { trigger: { name: "late" } });
    check(r.status === 200, "another run");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 41 of 46");
    await contiguous(41);
    await page.click("#more");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 46 of 46");
    await contiguous(46);
    // The id filter, typed, then cleared: its rows, then all of them reachable again.
    const prefix = made[7].slice(0, 6);
    await page.fill("#f-id", prefix);
    await page.waitForFunction((p) => {
      const rows = [...document.querySelectorAll("#history li[data-id]")];
      return rows.length > 0 && rows.every((li) => li.dataset.id.startsWith(p));
    }, prefix);
    await page.fill("#f-id", "");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 20 of 46");
    await contiguous(20);
    await page.click("#more");
    await page.click("#more");
    await page.waitForFunction(() => document.querySelector("#history-count").textContent === "showing 46 of 46");
    await contiguous(46);
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },

  // At 400 px (the side column below the content) the execution's heading, where Run puts the
  // focus, is in view once its steps have arrived; a step that never ran says so.
  async narrow() {
    const b = await browser({ viewport: { width: 400, height: 800 } });
    const { page } = b;
    await open(page);
    await selectWorkflow(page, "Fails early");
    await page.click("#run-button");
    await waitStatus(page, "error");
    // The end and the record's refresh after it (the steps counted) have come.
    await page.waitForFunction(() => document.querySelector("#ex-step").textContent.includes("steps ran"));
    await page.waitForFunction(() => {
      const icon = document.querySelector("#nodes li:last-child .icon");
      return icon && icon.getAttribute("aria-label") === "not run";
    }, null, { timeout: 5000 }).catch(() => { throw new Error("the step after the failure is not said to be not run"); });
    const at = await page.evaluate(() => {
      const r = document.querySelector("#ex-heading").getBoundingClientRect();
      return { top: r.top, bottom: r.bottom, height: innerHeight, focused: document.activeElement.id };
    });
    check(at.focused === "ex-heading", "Run put the focus on the execution: " + at.focused);
    check(at.top >= 0 && at.bottom <= at.height, "the heading is in view: " + JSON.stringify(at));
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },

  // The address names the workflow chosen and the execution shown: a reload shows them again,
  // and so does the link opened in a new browser once the token is given.
  async address() {
    const b = await browser();
    const { page } = b;
    await open(page);
    await selectWorkflow(page, "Greeter");
    await page.fill("#in-0", "Lin");
    await page.click("#run-button");
    await waitStatus(page, "success");
    const id = await text(page, "#ex-id");
    const url = page.url();
    check(url.endsWith("#workflow=greet&execution=" + id), "the address: " + url);
    check(!url.includes(config.token), "never the token");
    await page.reload();
    await page.waitForSelector("#run:not(.hidden)");
    await waitStatus(page, "success");
    check((await text(page, "#ex-id")) === id && (await text(page, "#wf-name")) === "Greeter", "a reload shows them again");
    check((await text(page, "#ex-output")).includes("Hello, Lin"), "with the output");
    const other = await browser();
    await other.page.goto(url);
    await other.page.fill("#token", config.token);
    await other.page.click("#save-token");
    await waitStatus(other.page, "success");
    check((await text(other.page, "#ex-id")) === id, "the link opens the execution");
    // An address edited to another execution shows that one; a made-up one says it is unknown.
    await page.evaluate(() => { location.hash = "workflow=greet&execution=0123456789abcdef"; });
    await page.waitForFunction(() => document.querySelector("#ex-id").textContent === "0123456789abcdef");
    await waitStatus(page, "error");
    // (The browser logs the 404 it was answered; nothing else.)
    const errors = b.errors.concat(other.errors).filter((e) => !e.includes("status of 404"));
    check(errors.length === 0, "no script errors: " + errors.join("; "));
    await other.close();
    await b.close();
  },

  // Typed values stay with their workflow when another is chosen and then it again; a JSON
  // field says what it wants.
  async typed_values() {
    const b = await browser();
    const { page } = b;
    await open(page);
    await selectWorkflow(page, "Greeter");
    await page.fill("#in-0", "Grace");
    await page.fill("#in-1", "7");
    await selectWorkflow(page, "Greeter"); // chosen again
    check((await page.inputValue("#in-0")) === "Grace", "kept on choosing it again");
    await selectWorkflow(page, "Order");
    check((await text(page, "#fields")).includes("a JSON list, like"), "the list field says it wants JSON: " + (await text(page, "#fields")));
    await page.fill("textarea.json", "a, b");
    await page.click("#run-button");
    check((await text(page, "#in-1-error")).includes("a JSON list"), "its error says how to write it: " + (await text(page, "#in-1-error")));
    await selectWorkflow(page, "Greeter");
    check((await page.inputValue("#in-0")) === "Grace" && (await page.inputValue("#in-1")) === "7", "kept across another workflow");
    // A list field that comes first and is focused opens at the start of its default, not
    // scrolled to its end.
    await selectWorkflow(page, "Batch");
    const box = await page.evaluate(() => {
      const t = document.activeElement;
      return { tag: t.tagName, top: t.scrollTop, caret: t.selectionStart, taller: t.scrollHeight > t.clientHeight };
    });
    check(box.tag === "TEXTAREA" && box.taller, "the list field is focused and longer than its box: " + JSON.stringify(box));
    check(box.top === 0 && box.caret === 0, "it shows its start: " + JSON.stringify(box));
    // A workflow that cannot run and has no field: the focus goes to its name, the reason next.
    await selectWorkflow(page, "Needs a key");
    check((await page.evaluate(() => document.activeElement.id)) === "wf-name", "the focus is on the workflow's name");
    // A bad id filter says so at the field.
    await page.fill("#f-id", "zz");
    await page.waitForFunction(() => document.querySelector("#f-id-error").textContent.includes("16 hex digits"));
    check((await page.getAttribute("#f-id", "aria-describedby")) === "f-id-error", "tied to the field");
    // Its file changed (an input removed), then Reload: the form is the new one, what was typed
    // in the field that remains brought back, nothing of the removed one sent.
    await selectWorkflow(page, "Greeter");
    const file = path.join(config.workflows, "greet.json");
    const def = JSON.parse(fs.readFileSync(file, "utf8"));
    delete def.inputs.properties.times;
    def.nodes[0].template = "Hi, {{ trigger.name }}";
    fs.writeFileSync(file, JSON.stringify(def));
    await page.click("#reload");
    await page.waitForFunction(() => !document.querySelector("#in-1"));
    check((await page.inputValue("#in-0")) === "Grace", "the typed name is kept");
    await page.click("#run-button");
    await waitStatus(page, "success");
    const id = await text(page, "#ex-id");
    const sent = (await api("GET", "/api/executions/" + id)).body.trigger;
    check(JSON.stringify(sent) === JSON.stringify({ name: "Grace" }), "what was sent: " + JSON.stringify(sent));
    // Its file removed, then Reload: no form for it.
    fs.unlinkSync(file);
    await page.click("#reload");
    await page.waitForSelector("#run.hidden", { state: "attached" });
    check((await text(page, "#message")).includes("no longer in the list"), "said: " + (await text(page, "#message")));
    // The run form's region is told apart from the execution's, both named after the workflow.
    check((await page.getAttribute("#run", "aria-labelledby")) === "run-label wf-name", "the run form's region has its own name");
    // Forgetting the token forgets what was typed (a key, perhaps).
    await page.click("#forget-token");
    await page.fill("#token", config.token); // in the same page: no reload forgets for it
    await page.click("#save-token");
    await page.waitForSelector("#workflows li button");
    await selectWorkflow(page, "Order");
    check((await page.inputValue("textarea.json")) !== "a, b", "typed values are gone with the token");
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },
};
