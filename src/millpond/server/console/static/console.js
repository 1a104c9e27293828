// The console's only script (its CSP allows no inline script). Everything works without
// it but these comforts: forms marked data-confirm ask first, selects marked
// data-autosubmit submit their form, data-copy buttons copy a field, the SQL editor
// highlights its text, runs the selection (button or Ctrl+Enter) and keeps a history in
// this browser (localStorage, per database), and an upload's preview is fetched in place
// (the chosen file stays chosen), and the realtime inspector subscribes over the
// session's WebSocket and shows rows and changes as they arrive. Text is only ever set
// with textContent; the preview is the server's own escaped HTML.
"use strict";

// A box that scrolls (a wide table on a phone, a long result) can be reached and scrolled
// with the keyboard: it gets a tab stop while, and only while, it overflows.
function keyboardScrollers() {
  for (const box of document.querySelectorAll(".scroll, table.grid, ol.changes, pre")) {
    const scrolls = box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1;
    if (scrolls && !box.hasAttribute("tabindex")) {
      box.tabIndex = 0;
      box.dataset.scrollStop = "";
    } else if (!scrolls && box.dataset.scrollStop !== undefined) {
      box.removeAttribute("tabindex");
      delete box.dataset.scrollStop;
    }
  }
}
window.addEventListener("resize", keyboardScrollers);
window.addEventListener("load", keyboardScrollers);

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question !== undefined && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("change", (event) => {
  const field = event.target;
  if (field instanceof HTMLSelectElement && field.dataset.autosubmit !== undefined && field.form) {
    field.form.submit();
  }
});

document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard) {
    navigator.clipboard.writeText(field.value).then(done, () => document.execCommand("copy") && done());
  } else if (document.execCommand("copy")) {
    done();
  }
});

// -- the SQL editor ------------------------------------------------------------------------

const KEYWORDS = new Set((
  "select from where and or not insert into values update set delete create table alter drop " +
  "index view as on join left right inner outer full cross using group by order having limit " +
  "offset union all distinct case when then else end is null true false in exists between " +
  "like ilike primary key references foreign unique default check constraint begin commit " +
  "rollback with returning grant revoke to schema if cascade asc desc explain analyze copy " +
  "truncate function returns language trigger sequence type extension do cast"
).split(" "));
const TOKEN = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/g;

function highlight(pre, text) {
  pre.textContent = "";
  let last = 0;
  const add = (part, kind) => {
    if (!kind) { pre.append(part); return; }
    const span = document.createElement("span");
    span.className = "tok-" + kind;
    span.textContent = part;
    pre.append(span);
  };
  for (const m of text.matchAll(TOKEN)) {
    add(text.slice(last, m.index));
    const kind = m[1] ? "com" : m[2] ? "str" : m[4] ? "num"
      : m[5] && KEYWORDS.has(m[5].toLowerCase()) ? "kw" : null;
    add(m[0], kind);
    last = m.index + m[0].length;
  }
  add(text.slice(last) + "\n");
}

function historyKey(db) { return "millpond.sql-history." + db; }

function loadHistory(db) {
  try { return JSON.parse(localStorage.getItem(historyKey(db)) || "[]"); } catch { return []; }
}

function showHistory(list, textarea) {
  const entries = loadHistory(list.dataset.historyList);
  if (!entries.length) return;
  list.textContent = "";
  for (const sql of entries) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet";
    button.title = "Put it back in the editor";
    button.textContent = sql.length > 300 ? sql.slice(0, 300) + "…" : sql;
    button.addEventListener("click", () => {
      textarea.value = sql;
      textarea.dispatchEvent(new Event("input"));
      textarea.focus();
    });
    item.append(button);
    list.append(item);
  }
}

function setUpEditor(form) {
  const textarea = form.querySelector("textarea[name=sql]");
  const selection = form.querySelector("input[name=selection]");
  const pre = form.querySelector("pre.highlight");
  if (!textarea || !selection) return;
  if (pre) {
    pre.parentElement.classList.add("live");
    const sync = () => { highlight(pre, textarea.value); pre.scrollTop = textarea.scrollTop; };
    textarea.addEventListener("input", sync);
    textarea.addEventListener("scroll", () => { pre.scrollTop = textarea.scrollTop; });
    sync();
  }
  const selected = () => textarea.value.slice(textarea.selectionStart, textarea.selectionEnd);
  const run = (onlySelection) => {
    selection.value = onlySelection ? selected() : "";
    form.requestSubmit();
  };
  form.querySelector("[data-run-selection]")?.addEventListener("click", () => run(true));
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run(selected().trim() !== "");
    }
  });
  form.addEventListener("submit", (event) => {
    if (event.submitter && event.submitter.name === "run") selection.value = "";
    const ran = (selection.value || textarea.value).trim();
    if (!ran) return;
    const db = form.dataset.history;
    const entries = loadHistory(db).filter((sql) => sql !== ran);
    entries.unshift(ran);
    try { localStorage.setItem(historyKey(db), JSON.stringify(entries.slice(0, 50))); } catch { /* full */ }
  });
  const list = document.querySelector("[data-history-list]");
  if (list) showHistory(list, textarea);
}

document.querySelectorAll("form[data-history]").forEach(setUpEditor);
keyboardScrollers();

// -- the import form: its preview without leaving the page ------------------------------

function setUpPreview(form) {
  const button = form.querySelector("[data-preview-button]");
  const target = form.querySelector("#preview");
  if (!button || !target) return;
  button.addEventListener("click", async (event) => {
    if (!form.reportValidity()) return;
    event.preventDefault();
    button.disabled = true;
    target.setAttribute("aria-busy", "true");
    try {
      const answer = await fetch(form.dataset.preview, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
      });
      const html = await answer.text();
      const parsed = new DOMParser().parseFromString(html, "text/html");
      if ((answer.headers.get("content-type") || "").startsWith("text/html")) {
        target.replaceChildren(...parsed.body.childNodes);
        keyboardScrollers();
      } else {
        const note = document.createElement("div");
        note.className = "flash error";
        note.setAttribute("role", "alert");
        note.textContent = "The preview failed (" + answer.status + "): reload the page and try again.";
        target.replaceChildren(note);
      }
    } finally {
      button.disabled = false;
      target.removeAttribute("aria-busy");
    }
  });
}

document.querySelectorAll("form[data-preview]").forEach(setUpPreview);

// -- the realtime inspector -------------------------------------------------------------

function cellText(value) {
  if (value === null || value === undefined) return null;
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function setUpInspector(form) {
  const status = document.querySelector("[data-live-status]");
  const grid = document.querySelector("[data-live-rows]");
  const count = document.querySelector("[data-live-count]");
  const changes = document.querySelector("[data-live-changes]");
  const stop = form.querySelector("[data-live-stop]");
  let socket = null;
  let columns = [];
  let key = [];
  let rows = new Map();

  const say = (text) => { status.textContent = text; };
  const rowKey = (row) => JSON.stringify((key.length ? key : columns).map((c) => row[c]));

  function render() {
    const head = document.createElement("thead");
    const headRow = head.insertRow();
    for (const c of columns) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = c;
      headRow.append(th);
    }
    const body = document.createElement("tbody");
    for (const row of rows.values()) {
      const tr = body.insertRow();
      for (const c of columns) {
        const td = tr.insertCell();
        const text = cellText(row[c]);
        if (text === null) { td.className = "null"; td.textContent = "NULL"; } else td.textContent = text;
      }
    }
    grid.replaceChildren(head, body);
    count.textContent = "(" + rows.size + ")";
    keyboardScrollers();
  }

  function logChange(kind, row, at) {
    const item = document.createElement("li");
    item.dataset.change = kind;
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = (at ? new Date(at).toLocaleTimeString() : "") + " ";
    const what = document.createElement("strong");
    what.textContent = kind + " ";
    const body = document.createElement("code");
    body.textContent = JSON.stringify(row);
    item.append(when, what, body);
    changes.prepend(item);
    while (changes.children.length > 200) changes.lastElementChild.remove();
  }

  function apply(message) {
    for (const change of Object.values(message.tables || {})) {
      if (change.truncated) { rows.clear(); logChange("truncate", {}, message.commit_time); }
      for (const row of change.deletes || []) { rows.delete(rowKey(row)); logChange("delete", row, message.commit_time); }
      for (const update of change.updates || []) {
        rows.delete(rowKey(update.old));
        rows.set(rowKey(update.new), update.new);
        logChange("update", update.new, message.commit_time);
      }
      for (const row of change.inserts || []) { rows.set(rowKey(row), row); logChange("insert", row, message.commit_time); }
    }
    render();
  }

  function onMessage(event) {
    const message = JSON.parse(event.data);
    if (message.type === "hello") {
      say("Connected: subscribing…");
      socket.send(JSON.stringify({ type: "subscribe", request_id: "inspect", queries: [form.elements.query.value] }));
    } else if (message.type === "subscription_applied") {
      const table = Object.values(message.tables)[0] || { columns: [], key: [], rows: [] };
      columns = table.columns.map((c) => c.name);
      key = table.key || [];
      rows = new Map(table.rows.map((row) => [rowKey(row), row]));
      render();
      say("Live: " + form.elements.query.value);
    } else if (message.type === "transaction") {
      apply(message);
    } else if (message.type === "error") {
      say("Refused: " + message.message + " (" + message.code + ")");
    } else if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    }
  }

  function close() {
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    stop.disabled = true;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    close();
    changes.replaceChildren();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + form.dataset.live);
    say("Connecting…");
    stop.disabled = false;
    socket.onmessage = onMessage;
    socket.onclose = (event) => {
      say("Closed: " + (event.reason || "the connection ended") + " (" + event.code + ")");
      stop.disabled = true;
      socket = null;
    };
  });
  stop.addEventListener("click", () => { close(); say("Stopped."); });
}

document.querySelectorAll("form[data-live]").forEach(setUpInspector);
