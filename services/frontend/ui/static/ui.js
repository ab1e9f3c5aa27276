// Kadence web UI: the little script the server-rendered pages need (no build step, no CDN).
// Actions are JSON POSTs with the X-Kadence-UI header (the CSRF guard); the credential, when
// authentication is on, travels in an HttpOnly cookie this script never sees.
"use strict";

const PAUSED_KEY = "kadence-ui-refresh-paused";

// Control characters (but newline and tab) and the bidi overrides shown as their escapes, as
// the server renders the pages (kadence_protocol/visible_text.py): a query's answer or an
// error message holding U+202E must not reorder what the page shows.
const UNSEEN = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const SHORT = { "\r": "\\r" };

function visible(text) {
  return String(text).replace(UNSEEN, (c) => SHORT[c] || (c.charCodeAt(0) < 0x100
    ? "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0")
    : "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0")));
}

function confirmStep(message) {
  // A confirmation step inside the page (no window.confirm: it cannot be styled or tested well).
  const dialog = document.getElementById("confirm");
  if (!dialog || !message) return Promise.resolve(true);
  dialog.querySelector(".confirm-text").textContent = message;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

function formBody(form) {
  const body = {};
  for (const el of form.querySelectorAll("[name]")) {
    if (el.value === "" && !el.dataset.keepEmpty) continue;
    body[el.name] = el.dataset.json !== undefined ? JSON.parse(el.value) : el.value;
  }
  return body;
}

async function submitAction(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const out = form.querySelector(".result") || document.getElementById("result");
  let body;
  try {
    body = formBody(form);
  } catch (err) {
    if (out) out.textContent = "Not valid JSON: " + err.message;
    return;
  }
  if (!(await confirmStep(form.dataset.confirm))) return;
  const answer = await fetch(form.dataset.url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Kadence-UI": "1" },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await answer.json(); } catch (err) { data = { message: answer.statusText }; }
  if (!answer.ok) {
    if (out) {
      // 504: no worker took the query in time; a form may say what that means for it.
      const lead = answer.status === 504 && form.dataset.noAnswer ? form.dataset.noAnswer + " " : "";
      out.textContent = lead + visible((data.error || answer.status) + ": " + (data.message || ""));
      out.classList.add("bad");
    }
    return;
  }
  if (out) {
    // A query shows its answer (a JSON text; data-show-text: the text a JSON string holds);
    // the other actions say they are done.
    let shown = form.dataset.show ? String(data[form.dataset.show]) : (form.dataset.done || "Done.");
    if (form.dataset.showText !== undefined) {
      try { shown = String(JSON.parse(shown)); } catch (err) { /* not JSON: shown as it came */ }
    }
    out.textContent = visible(shown);
    out.classList.remove("bad");
  }
  if (form.dataset.goRun !== undefined && data.run_id) {
    // A reset: on to the page of the run it made.
    window.location.assign(window.location.pathname + "?run_id=" + encodeURIComponent(data.run_id));
  } else if (form.dataset.next) { window.location.assign(form.dataset.next); }
  else if (form.dataset.reload !== undefined) { window.location.reload(); }
}

function startRefresh(live) {
  const toggle = document.getElementById("refresh-toggle");
  const seconds = Number(live.dataset.refresh) || 5;
  const paused = () => sessionStorage.getItem(PAUSED_KEY) === "1";
  const label = () => { if (toggle) toggle.textContent = paused() ? "Resume auto-refresh" : "Pause auto-refresh"; };
  label();
  if (toggle) toggle.addEventListener("click", () => {
    sessionStorage.setItem(PAUSED_KEY, paused() ? "0" : "1");
    label();
  });
  setInterval(async () => {
    if (paused() || document.hidden) return;
    const answer = await fetch(window.location.href, { credentials: "same-origin" });
    if (!answer.ok) return;
    const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = doc.getElementById("live");
    if (fresh) live.replaceChildren(...fresh.childNodes);
    const stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }, seconds * 1000);
}

function namespaceSwitcher(select) {
  select.addEventListener("change", () => {
    window.location.assign("/ui/namespaces/" + encodeURIComponent(select.value) + "/workflows");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.js-action")) form.addEventListener("submit", submitAction);
  const live = document.getElementById("live");
  if (live && live.dataset.refresh) startRefresh(live);
  const select = document.getElementById("namespace-select");
  if (select) namespaceSwitcher(select);
  for (const el of document.querySelectorAll("[data-dismiss]")) {
    el.addEventListener("click", () => document.getElementById("confirm").close(el.dataset.dismiss));
  }
});
