"use strict";
// The page's shared parts: elements, the token, API calls, the event-stream reader, formats.
// Every piece of data from the server goes in with textContent (or as a text node): nothing it
// sends can become markup or script.
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "flowrun.token";
const state = { features: {}, tokenWorked: false, workflows: [] };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function button(text, cls, onClick, label) {
  const b = el("button", cls, text);
  b.type = "button";
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

// A part with `data-skip` takes the skip link that leads to it along: a link is offered only
// while there is something to go to.
function show(e, on) {
  e.classList.toggle("hidden", !on);
  if (e.dataset.skip) $(e.dataset.skip).classList.toggle("hidden", !on);
}

// Is `e` a field one types in or picks from? Keys such as Escape belong to it there (a select's
// Escape closes its list).
function isTextField(e) {
  if (!e) return false;
  if (e.isContentEditable || e.tagName === "TEXTAREA" || e.tagName === "SELECT") return true;
  return e.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "reset", "range", "color", "file", "image"].includes(e.type);
}

// A number as typed (`3`, `-0.5`, `1e3`): {value}, or {error} saying why not. A number field is
// a text field, because the browser's own (type=number) hides from the page what it cannot read
// — `1e400`, `1e`, `-` read as empty, and `0,5` as `05` — so what was typed was dropped or
// changed without a word. Refused too, for the same reason: what the page cannot hold as typed
// (`1e400`; `1e-400`, which would be 0) and, for a `whole` number, a fraction however small
// (`2.9999999999999999` reads as 3) or more than 2^53 - 1 (`9007199254740993` reads as …992).
function parseNumber(raw, whole) {
  const t = raw.trim();
  const m = /^[+-]?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(t);
  if (!m || (m[1] === "" && !m[2])) {
    return { error: whole ? "not a whole number (digits 0-9, like 3)" : "not a number (digits 0-9, like 0.5 or -2)" };
  }
  const n = Number(t);
  const digits = m[1] + (m[2] || "");
  if (!isFinite(n)) return { error: "too large a number" };
  if (n === 0 && /[1-9]/.test(digits)) return { error: "too small a number (it would be sent as 0)" };
  if (whole) {
    // The digits after the point once the exponent has moved it.
    const before = m[1].length + Number(m[3] || 0);
    if (/[1-9]/.test(before <= 0 ? digits : digits.slice(before))) return { error: "a whole number" };
    if (!Number.isSafeInteger(n)) return { error: "too large a whole number to send exactly (at most " + Number.MAX_SAFE_INTEGER + ")" };
  }
  return { value: n };
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text || "";
  m.className = bad ? "bad" : "muted";
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  return Object.assign({ "Authorization": "Bearer " + token() }, extra || {});
}

// A 401 after the token worked means the server restarted with a new token.
function tokenRefused() {
  say(state.tokenWorked
    ? "the server restarted — paste the new token (from the token file `flowrun serve` printed)"
    : "the token was refused: paste the one from the token file `flowrun serve` printed", true);
}

// A JSON API call: {status, body}; status 0 when the server cannot be reached.
async function api(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    say("cannot reach the server (" + e.message + ")", true);
    return { status: 0, body: null };
  }
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (resp.status === 401) tokenRefused(); else state.tokenWorked = true;
  return { status: resp.status, body: data };
}

function errorText(body, status) {
  if (body && body.message) return body.message;
  return status ? "HTTP " + status : "the server cannot be reached";
}

function formatMs(ms) {
  if (typeof ms !== "number" || !isFinite(ms)) return "";
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}

function formatCost(usd) {
  if (typeof usd !== "number") return "";
  return "$" + (usd < 0.01 ? usd.toPrecision(2) : usd.toFixed(4));
}

function formatTokens(i, o) {
  if (typeof i !== "number" && typeof o !== "number") return "";
  return (i || 0) + " in / " + (o || 0) + " out tokens";
}

function pretty(v) {
  if (v === undefined) return "";
  try { return JSON.stringify(v, null, 2); } catch (_) { return String(v); }
}

// A truncation marker ({"$flowrun_truncated": true, bytes, preview}) stands for a payload too
// large to keep.
function isTruncated(v) {
  return v !== null && typeof v === "object" && v["$flowrun_truncated"] === true;
}

// A value to read: pretty JSON, or for a truncation marker the text it kept (itself JSON, cut),
// not the marker with that text escaped inside it.
function shownValue(v) {
  return isTruncated(v) ? String(v.preview || "") + " …" : pretty(v);
}

function truncatedNote(v) {
  return "This output was " + v.bytes + " bytes, more than the store keeps per field; only its first characters are kept (the preview below). The node itself received the whole value.";
}

const ICONS = { success: "✓", pinned: "●", reused: "●", mocked: "●", error: "✗", timeout: "✗", cancelled: "■", interrupted: "✗", skipped: "○", pending: "·", "not run": "·", paused: "Ⅱ" };

function setIcon(icon, status) {
  icon.replaceChildren();
  if (status === "running" || status === "queued") icon.append(el("span", "spin"));
  else icon.textContent = ICONS[status] || "?";
  icon.title = status;
  icon.setAttribute("aria-label", status);
  icon.setAttribute("role", "img");
  icon.className = "icon " + (["success", "pinned", "reused", "mocked"].includes(status) ? "ok" : ICONS[status] === "✗" ? "bad" : "muted");
}

// Reads a text/event-stream response: fields up to a blank line make one message, handed to
// onMessage(event, data, id). Returns when the stream ends.
async function readEvents(resp, onMessage) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let msg = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    // A "\r" at the end may be the first half of "\r\n": keep it for the next chunk.
    const carry = buffer.endsWith("\r") ? "\r" : "";
    if (carry) buffer = buffer.slice(0, -1);
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop() + carry;
    for (const line of lines) {
      if (line === "") {
        if (msg.data.length) {
          let data = null;
          try { data = JSON.parse(msg.data.join("\n")); } catch (_) { data = null; }
          if (data && onMessage(msg.event, data, msg.id) === false) return;
        }
        msg = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let v = i < 0 ? "" : line.slice(i + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "event") msg.event = v;
      else if (field === "data") msg.data.push(v);
      else if (field === "id") msg.id = v;
    }
  }
}

// Opens an event stream with the token (EventSource cannot send it).
function openEvents(path, lastId, signal) {
  const h = headers({ "Accept": "text/event-stream" });
  if (lastId !== null && lastId !== undefined) h["Last-Event-ID"] = lastId;
  return fetch(path, { headers: h, signal, cache: "no-store" });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
