// The page: tabs (Runs, Chat, Side by side, Arena), the address bar's #hash as the route, and the API key.

import { AuthError, apiKey, forgetApiKey, getJSON, setApiKey } from "./api.js";
import { arenaView } from "./arena.js";
import { chatView } from "./chat.js";
import { append, clear, h } from "./dom.js";
import { compareView, evalView, runView, runsList } from "./runs.js";

const views = {
  runs: document.getElementById("view-runs"),
  chat: document.getElementById("view-chat"),
  side: document.getElementById("view-side"),
  arena: document.getElementById("view-arena"),
};
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyError = document.getElementById("key-error");
const forgetButton = document.getElementById("forget-key");

let info = null; // /ui/api/info, once the key (if any) is accepted
let models = null; // /v1/models
let stopRunsView = () => {};
const chatBuilt = new Set();
let arenaBuilt = null; // the arena's build, once started: a second hashchange must not build it twice

function askForKey(message) {
  stopRunsView();
  keyError.textContent = message || "";
  keyForm.hidden = false;
  keyInput.focus();
}

function onError(err) {
  if (err instanceof AuthError) {
    askForKey(err.message);
    return;
  }
  const shown = h("p", { class: "error banner" }, `Error: ${err.message || err}`);
  document.querySelector("main").prepend(shown);
  setTimeout(() => shown.remove(), 10000);
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  keyInput.value = "";
  keyForm.hidden = true;
  start();
});
forgetButton.addEventListener("click", () => {
  forgetApiKey();
  location.reload();
});

async function loadModels() {
  if (models !== null) return models;
  if (!info.chat) return (models = []);
  const listed = await getJSON("v1/models");
  models = listed.data.map((m) => ({ id: m.id, parent: m.parent || null }));
  return models;
}

async function route() {
  const [tab, arg] = (location.hash.slice(1) || "runs").split(/\/(.*)/s);
  const active = tab in views ? tab : "runs"; // #run/ID, #compare/A,B and #eval/ID are runs views
  for (const [name, el] of Object.entries(views)) el.hidden = name !== active;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.tab === active);
  stopRunsView();
  stopRunsView = () => {};
  if (active === "runs") {
    document.title = "prefkit";
    const id = decodeURIComponent(arg || "");
    if (tab === "run" && id) stopRunsView = runView(views.runs, id, { onError });
    else if (tab === "compare" && arg) stopRunsView = compareView(views.runs, arg.split(",").map(decodeURIComponent), { onError });
    else if (tab === "eval" && id) stopRunsView = evalView(views.runs, id, { onError });
    else stopRunsView = runsList(views.runs, { onError });
    return;
  }
  if (active === "arena") {
    if (arenaBuilt) return; // a battle stays while you look at other tabs
    arenaBuilt = arenaView(views.arena, { onError }).catch((err) => {
      arenaBuilt = null; // try again on the next visit (after the key is given, say)
      onError(err);
    });
    return;
  }
  if (chatBuilt.has(active)) return; // a conversation stays while you look at other tabs
  try {
    chatView(views[active], await loadModels(), active === "chat" ? 1 : 2, { onError });
    chatBuilt.add(active);
  } catch (err) {
    onError(err);
  }
}

async function start() {
  try {
    info = await getJSON("ui/api/info");
  } catch (err) {
    if (err instanceof AuthError) return askForKey(apiKey() ? err.message : ""); // no reproach the first time
    append(clear(views.runs), [h("p", { class: "error" }, `Cannot reach the server: ${err.message}`)]);
    views.runs.hidden = false;
    return;
  }
  forgetButton.hidden = !apiKey();
  document.getElementById("where").textContent = `runs in ${info.runs_dir}${info.chat ? "" : " · no model served"}`;
  route();
}

window.addEventListener("hashchange", () => info && route());
start();
