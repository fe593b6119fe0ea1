// The chat page: one server session per tab (its id in sessionStorage), replies streamed
// from /api/sessions/{id}/messages as server-sent events read with fetch.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
let session = null;
let suggestionRound = 0;
let sending = false;

// ------------------------------------------------------------------ the server
async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = store.getItem("tt-api-key");
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    const entered = window.prompt("This server needs its API key:");
    if (entered) {
      store.setItem("tt-api-key", entered.trim());
      return call(method, path, body);
    }
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

async function sessionCall(method, action, body) {
  try {
    return await call(method, "/api/sessions/" + session.id + action, body);
  } catch (error) {
    if (error.status !== 404) throw error;
    status("Your session expired: a new one has started.");
    await startSession(true);
    return call(method, "/api/sessions/" + session.id + action, body);
  }
}

async function startSession(fresh) {
  const saved = store.getItem("tt-session");
  if (saved && !fresh) {
    try {
      session = await (await call("GET", "/api/sessions/" + saved)).json();
      return;
    } catch (error) { /* expired: start a new one */ }
  }
  session = await (await call("POST", "/api/sessions")).json();
  store.setItem("tt-session", session.id);
}

// ------------------------------------------------------------------ rendering
function status(text) { $("status").textContent = text || ""; }

function render() {
  const persona = $("persona");
  persona.replaceChildren(...session.persona.map((s) => el("li", s)));
  $("persona-edit").value = session.persona.join("\n");
  $("user-persona").value = session.user_persona.join("\n");
  const form = $("settings-form");
  for (const [name, value] of Object.entries(session.settings)) {
    if (form.elements[name]) form.elements[name].value = value;
  }
  $("messages").replaceChildren(...session.history.map((t) => message(t.role, t.text)));
  showNotes(session.notes);
  scrollDown();
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function message(role, text) {
  const li = el("li", undefined, role);
  li.append(el("span", text, "text"));
  return li;
}

function showNotes(notes) {
  $("notes").hidden = !notes || !notes.length;
  $("notes").textContent = notes && notes.length ? "The model could not read everything: " + notes.join("; ") : "";
}

function scrollDown() { $("messages").scrollTop = $("messages").scrollHeight; }

function setBusy(busy) {
  sending = busy;
  for (const id of ["send", "undo", "reset", "new-persona"]) $(id).disabled = busy;
  for (const b of $("suggestions").querySelectorAll("button")) b.disabled = busy;
}

// ------------------------------------------------------------------ chatting
async function send(text) {
  text = text.trim();
  if (!text || sending) return;
  setBusy(true);
  $("input").value = "";
  $("suggestions").replaceChildren();
  $("messages").append(message("user", text));
  const bot = message("bot pending", "");
  $("messages").append(bot);
  scrollDown();
  const started = performance.now();
  try {
    const response = await sessionCall("POST", "/messages", { text });
    await readEvents(response, (name, data) => {
      if (name === "start") showNotes(data.notes);
      else if (name === "token") { bot.querySelector(".text").textContent += data.text; scrollDown(); }
      else if (name === "reply") {
        bot.querySelector(".text").textContent = data.text;
        const seconds = (ms) => (ms / 1000).toFixed(2) + " s";
        bot.append(el("span", `${seconds(data.latency_ms)} · ${data.tokens} tokens · first token ${seconds(data.first_token_ms)}`, "meta"));
      } else if (name === "error") throw new Error(data.message);
    });
    session.history.push({ role: "user", text }, { role: "bot", text: bot.querySelector(".text").textContent });
  } catch (error) {
    bot.className = "bot error";
    bot.querySelector(".text").textContent = "Error: " + error.message;
    status(`(${((performance.now() - started) / 1000).toFixed(1)} s)`);
  } finally {
    bot.classList.remove("pending");
    setBusy(false);
    $("input").focus();
  }
  refreshSuggestions();
}

async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(name, data ? JSON.parse(data) : {});
    }
  }
}

async function refreshSuggestions() {
  const round = ++suggestionRound;
  const box = $("suggestions");
  box.replaceChildren();
  if (!session.settings.suggestions) return;
  box.append(el("span", "writing suggestions…", "muted"));
  try {
    const { suggestions } = await (await sessionCall("POST", "/suggestions")).json();
    if (round !== suggestionRound) return;  // the conversation moved on
    box.replaceChildren(...suggestions.map((text) => {
      const button = el("button", text);
      button.type = "button";
      button.className = "suggestion";
      button.disabled = sending;
      button.addEventListener("click", () => send(text));
      return button;
    }));
  } catch (error) {
    if (round === suggestionRound) box.replaceChildren(el("span", "no suggestions: " + error.message, "muted"));
  }
}

async function act(action, method = "POST", body) {
  try {
    session = await (await sessionCall(method, action, body)).json();
    render();
    status("");
    return true;
  } catch (error) {
    status(error.message);
    return false;
  }
}

// ------------------------------------------------------------------ wiring
function wire() {
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); send($("input").value); });
  $("new-persona").addEventListener("click", async () => { if (await act("/new-persona")) refreshSuggestions(); });
  $("reset").addEventListener("click", async () => { if (await act("/reset")) refreshSuggestions(); });
  $("undo").addEventListener("click", async () => { if (await act("/undo")) refreshSuggestions(); });
  $("edit-persona").addEventListener("click", () => {
    const editing = $("persona-edit").hidden;
    $("persona-edit").hidden = !editing;
    $("save-persona").hidden = !editing;
    $("persona").hidden = editing;
  });
  $("save-persona").addEventListener("click", async () => {
    if (await act("", "PATCH", { persona: $("persona-edit").value })) {
      $("persona-edit").hidden = $("save-persona").hidden = true;
      $("persona").hidden = false;
    }
  });
  $("save-user-persona").addEventListener("click", async () => {
    if (await act("", "PATCH", { user_persona: $("user-persona").value })) refreshSuggestions();
  });
  $("random-user-persona").addEventListener("click", async () => { if (await act("/user-persona")) refreshSuggestions(); });
  $("clear-user-persona").addEventListener("click", async () => {
    if (await act("", "PATCH", { user_persona: "" })) refreshSuggestions();
  });
  $("settings-form").addEventListener("change", async (event) => {
    const field = event.target;
    const value = field.type === "number" ? Number(field.value) : field.value;
    if (await act("", "PATCH", { settings: { [field.name]: value } }) && field.name === "suggestions") refreshSuggestions();
  });
}

async function main() {
  wire();
  try {
    const health = await (await fetch("/health")).json();
    $("model").textContent = health.model;
    await startSession(false);
    render();
    refreshSuggestions();
  } catch (error) {
    status("Cannot reach the server: " + error.message);
  }
}

main();
