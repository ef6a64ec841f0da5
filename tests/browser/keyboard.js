// The page of `flowrun serve` with the keyboard alone: where the focus goes after each action,
// the skip links, Escape, a refused input. Run through scenarios.js (node scenarios.js NAME
// CONFIG), as its other scenarios are, by the tests in tests/it/page_browser.rs.
"use strict";
const { config, browser, open, check, text, selectWorkflow, waitStatus, count } = require("./lib");

module.exports = {
  // From load to result with the keyboard alone.
  async keyboard() {
    const b = await browser();
    const { page } = b;
    await page.goto(config.url);
    const kb = page.keyboard;
    const focused = () => page.evaluate(() => document.activeElement && (document.activeElement.id || document.activeElement.textContent));
    const tabTo = async (want, max) => {
      for (let i = 0; i < (max || 40); i++) {
        const f = await focused();
        if (typeof want === "string" ? f === want : want(f)) return;
        await kb.press("Tab");
      }
      throw new Error("Tab never reached " + want);
    };
    await tabTo("token");
    await kb.type(config.token);
    await kb.press("Enter");
    await page.waitForSelector("#workflows li button");
    // The token is confirmed (the field it was typed in empties).
    await page.waitForFunction(() => document.querySelector("#message").textContent.startsWith("Connected"));
    await tabTo((f) => typeof f === "string" && f.startsWith("Greeter"));
    await kb.press("Enter");
    // The form's first field has the focus.
    check((await focused()) === "in-0", "focus moves to the first field");
    await kb.type("Keys");
    await kb.press("Enter");
    await waitStatus(page, "success");
    check((await text(page, "#ex-output")).includes("Hello, Keys x2"), "the result");
    // A step opens its panel with the keyboard, and Escape closes it.
    await tabTo((f) => typeof f === "string" && f.includes("Say hello"));
    await kb.press("Enter");
    await page.waitForSelector("#panel:not(.hidden)");
    await page.waitForFunction(() => document.querySelector("#panel-output").textContent.includes("Hello, Keys"));
    await kb.press("Escape");
    await page.waitForSelector("#panel.hidden", { state: "attached" });
    const onStep = async () => (await page.evaluate(() => document.activeElement.closest("#nodes li") !== null)) && (await focused()).includes("Say hello");
    check(await onStep(), "the focus is back on the step: " + (await focused()));
    // Escape closes it after a Tab took the focus out of it too, and the focus goes back to
    // the step.
    await kb.press("Enter");
    await page.waitForSelector("#panel:not(.hidden)");
    await kb.press("Shift+Tab");
    check(await page.evaluate(() => !document.querySelector("#panel").contains(document.activeElement)), "Shift+Tab left the panel");
    await kb.press("Escape");
    await page.waitForSelector("#panel.hidden", { state: "attached", timeout: 5000 })
      .catch(() => { throw new Error("Escape with the focus out of the panel did not close it"); });
    check(await onStep(), "back on the step: " + (await focused()));
    // The skip links, the first stops of the page (before the token field): hidden until
    // focused, then seen, each leading past the history to the work.
    await kb.press("Enter");
    await page.waitForSelector("#panel:not(.hidden)");
    const onScreen = () => page.evaluate(() => {
      const r = document.activeElement.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight;
    });
    await page.focus("#token");
    await kb.press("Shift+Tab");
    check((await focused()) === "skip-execution", "before the token: Skip to the execution, not " + (await focused()));
    check(await page.evaluate(() => document.querySelector("#skip-run").getBoundingClientRect().right <= 0), "a skip link is off the screen until focused");
    check(await onScreen(), "the focused skip link is on the screen");
    await kb.press("Shift+Tab");
    check((await focused()) === "skip-run", "and Skip to the run form, not " + (await focused()));
    check(await onScreen(), "the focused skip link is on the screen");
    check(await page.evaluate(() => document.activeElement.textContent === "Skip to the run form"), "says where it goes");
    await kb.press("Enter");
    check((await focused()) === "in-0", "the run form's first field: " + (await focused()));
    // From the top of the page to Run: the link, Enter, then the form's own few stops (not the
    // ~3 a history row).
    await tabTo("run-button", 4);
    // Escape in a field one types in belongs to the field: the panel stays. So it does in a
    // select (the history's status filter), where Escape closes its list.
    await page.focus("#in-0");
    await kb.press("Escape");
    check(await page.isVisible("#panel"), "Escape in a text field leaves the panel open");
    await page.focus("#f-status");
    await kb.press("Escape");
    check(await page.isVisible("#panel"), "Escape in a select leaves the panel open");
    await page.focus("#token");
    await kb.press("Shift+Tab");
    await kb.press("Enter");
    check((await focused()) === "ex-heading", "Skip to the execution: its heading, not " + (await focused()));
    await kb.press("Escape");
    await page.waitForSelector("#panel.hidden", { state: "attached" });
    check(await onStep(), "back on the step: " + (await focused()));
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },

  // Run, Stop, Pause and Delete with the keyboard: the focus follows what each opened or left
  // (it fell to the page's start when the button pressed was disabled or hidden), and
  // "stopping…" goes once the execution has stopped. After Stop or Pause the focus is on the
  // status, never on what took the button's place: a second Enter there started a new run.
  async keyboard_stop_delete() {
    const b = await browser();
    const { page } = b;
    const kb = page.keyboard;
    const focused = () => page.evaluate(() => document.activeElement && document.activeElement.id);
    const waitFocus = (id) => page.waitForFunction((i) => document.activeElement && document.activeElement.id === i, id, { timeout: 10000 })
      .catch(async () => { throw new Error("focus on " + (await focused()) + ", not " + id); });
    await open(page);
    await selectWorkflow(page, "Slow");
    await page.focus("#run-button");
    await kb.press("Enter");
    await waitFocus("ex-heading");
    await page.waitForSelector("#stop-button:not(.hidden)");
    await kb.press("Tab");
    check((await focused()) === "stop-button", "Stop is a Tab away: " + (await focused()));
    const stopped = await text(page, "#ex-id");
    await kb.press("Enter");
    await waitStatus(page, "cancelled");
    // The user's second Enter, once it has stopped: nothing starts.
    await kb.press("Enter");
    await page.waitForTimeout(800);
    check((await count("slow")) === 1, "a second Enter after Stop started nothing: " + (await count("slow")) + " executions");
    check((await text(page, "#ex-id")) === stopped, "the view still shows the stopped execution");
    await waitFocus("ex-status");
    check((await text(page, "#ex-status")).includes("cancelled"), "the status focused says how it ended");
    await page.waitForFunction(() => document.querySelector("#action-message").textContent === "", null, { timeout: 10000 });
    await kb.press("Tab");
    check((await focused()) === "rerun-button", "the actions are a Tab away: " + (await focused()));
    await page.focus("#delete-button");
    await kb.press("Enter");
    await waitFocus("confirm-yes");
    await kb.press("Enter");
    await page.waitForSelector("#execution.hidden", { state: "attached" });
    await waitFocus("history-heading");
    // Pause, then Enter again once it has paused: Resume is not under the focus.
    await selectWorkflow(page, "Pausable");
    await page.focus("#run-button");
    await kb.press("Enter");
    await waitFocus("ex-heading");
    await page.waitForSelector("#pause-button:not(.hidden)");
    await kb.press("Tab");
    await kb.press("Tab");
    check((await focused()) === "pause-button", "Pause is two Tabs away: " + (await focused()));
    await kb.press("Enter");
    await waitStatus(page, "paused");
    await kb.press("Enter");
    await page.waitForTimeout(800);
    check((await count("pausable")) === 1, "a second Enter after Pause started nothing: " + (await count("pausable")) + " executions");
    check((await page.getAttribute("#ex-status .icon", "title")) === "paused", "still paused");
    await waitFocus("ex-status");
    check(b.errors.length === 0, "no script errors: " + b.errors.join("; "));
    await b.close();
  },

  // Input the form cannot check, refused by the server (422 invalid_input): the field it is
  // about — the list whose item is wrong — is marked and has the focus; a refusal of the input
  // as a whole (no field) puts the focus on the message. Nothing starts.
  async refused_input() {
    const b = await browser();
    const { page } = b;
    const kb = page.keyboard;
    const focused = () => page.evaluate(() => document.activeElement && document.activeElement.id);
    await open(page);
    await selectWorkflow(page, "Order");
    const lines = await page.getAttribute("#fields label:has-text('lines')", "for");
    await page.fill("#" + lines, '[{"qty": 0}]');
    await page.focus("#run-button");
    await kb.press("Enter");
    await page.waitForFunction(() => document.querySelector("#run-message").textContent.includes("minimum"));
    await page.waitForFunction((id) => document.activeElement && document.activeElement.id === id, lines, { timeout: 5000 })
      .catch(async () => { throw new Error("focus on " + (await focused()) + ", not the field " + lines); });
    check((await page.getAttribute("#" + lines, "aria-invalid")) === "true", "the field is marked invalid");
    const error = await text(page, "#" + lines + "-error");
    check(error.includes("lines[0].qty") && error.includes("minimum of 1"), "the field says what is wrong, and where: " + error);
    check((await page.getAttribute("#" + lines, "aria-describedby")).includes(lines + "-error"), "the error describes the field");
    check((await page.$$("#fields [aria-invalid=true]")).length === 1, "only that field is marked");
    // Empty, the form sends {}: refused as a whole, the message has the focus.
    await page.fill("#" + lines, "");
    await page.focus("#run-button");
    await kb.press("Enter");
    await page.waitForFunction(() => document.querySelector("#run-message").textContent.includes("less than 1 property"));
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === "run-message", null, { timeout: 5000 })
      .catch(async () => { throw new Error("focus on " + (await focused()) + ", not the message"); });
    check((await page.$$("#fields [aria-invalid=true]")).length === 0, "no field is marked for a problem of no field");
    check((await count("order")) === 0, "nothing was started");
    // Fixed, it runs.
    await page.fill("#" + lines, '[{"qty": 2}]');
    await page.focus("#run-button");
    await kb.press("Enter");
    await waitStatus(page, "success");
    check((await text(page, "#run-message")) === "", "the message is gone");
    // Chromium logs each refused request; any other error counts.
    const errors = b.errors.filter((e) => !e.includes("status of 422"));
    check(errors.length === 0, "no script errors: " + errors.join("; "));
    await b.close();
  },
};
