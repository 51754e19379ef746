// The Arena tab: a blind battle between two served models. One prompt (typed, or drawn from the
// server's --prompts file) goes to two models the server picks; their replies stream side by side as
// "Model A" and "Model B" -- which is which is the server's secret, in random order -- and the person
// votes A / B / Tie / Both bad. Only the vote's answer names the two models. Everything the server
// sends (replies, prompts, model names) goes into the page as text nodes.

import { ApiError, AuthError, getJSON, postJSON, postStream } from "./api.js";
import { append, clear, fmt, h } from "./dom.js";

const VOTER_KEY = "prefkit.voter"; // localStorage: a voter's name is the same next week, not a secret
const SIDES = ["a", "b"];
const CHOICES = [
  { winner: "a", label: "A is better", key: "1" },
  { winner: "b", label: "B is better", key: "2" },
  { winner: "tie", label: "Tie", key: "3" },
  { winner: "both_bad", label: "Both are bad", key: "4" },
];
const HOW_TO_START = "prefkit serve --model M --adapter NAME=RUN --ui --runs DIR [--prompts FILE]";

// One side of a battle: its head ("Model A", later "Model A: dpo") and its reply, streamed as text.
class Side {
  constructor(side) {
    this.side = side;
    this.label = `Model ${side.toUpperCase()}`;
    this.head = h("div", { class: "pane-head" });
    this.reply = h("div", { class: "reply", "aria-live": "polite" });
    this.note = h("p", { class: "note muted", hidden: true });
    this.root = h("div", { class: "pane arena-pane", "data-side": side }, this.head, h("div", { class: "reply-wrap" }, this.reply, this.note));
    this.reset();
  }

  reset() {
    this.text = "";
    this.state = null;
    this.finish = null;
    this.root.removeAttribute("data-state");
    this.root.removeAttribute("data-verdict");
    append(clear(this.head), [h("span", { class: "side-label" }, this.label)]);
    this.reply.textContent = "";
    this.note.hidden = true;
    this.note.textContent = "";
  }

  setState(state) {
    this.state = state;
    this.root.setAttribute("data-state", state);
  }

  add(piece) {
    this.text += piece;
    this.reply.textContent = this.text;
  }

  done(finish, maxTokens) {
    this.finish = finish;
    this.setState("done");
    if (finish === "length") this.showNote(`cut off at ${maxTokens} tokens`);
  }

  fail(why) {
    this.setState("error");
    this.showNote(why);
  }

  showNote(text) {
    this.note.textContent = text;
    this.note.hidden = false;
  }

  reveal(model, verdict) {
    append(this.head, [": ", h("strong", { class: "model-name" }, model)]);
    this.root.setAttribute("data-verdict", verdict);
  }
}

function verdictOf(side, winner) {
  if (winner === "tie") return "tie";
  if (winner === "both_bad") return "bad";
  return winner === side ? "won" : "lost";
}

function votesLine(count) {
  if (!count) return "No votes recorded yet.";
  return count === 1 ? "1 vote recorded." : `${count} votes recorded.`;
}

// A value and its interval as one cell: "1012 (987–1040)"; ratings in whole Elo points, rates as percentages.
function withInterval(value, interval, percent) {
  const show = (x) => (typeof x !== "number" ? fmt(x) : percent ? `${fmt(Math.round(x * 1000) / 10)}%` : fmt(Math.round(x)));
  if (value === undefined || value === null) return "—";
  const range = Array.isArray(interval) && interval.length === 2 ? ` (${show(interval[0])}–${show(interval[1])})` : "";
  return show(value) + range;
}

const nameOf = (m) => String(m.model ?? "?");
const present = (x) => x !== undefined && x !== null;

// The standings from /ui/api/arena/stats. Every field is optional: a column shows when any row has it.
function standingsTable(stats) {
  const rows = Array.isArray(stats && stats.models) ? stats.models.filter((m) => m && typeof m === "object") : [];
  const columns = [
    { key: "rank", title: "#", cell: (m) => fmt(m.rank), num: true },
    { key: "model", title: "Model", cell: nameOf },
    { key: "rating", title: "Rating (95% interval)", cell: (m) => withInterval(m.rating, m.rating_interval, false), num: true },
    { key: "battles", title: "Votes", cell: (m) => fmt(m.battles), num: true },
    { key: "wins", title: "Wins", cell: (m) => fmt(m.wins), num: true },
    { key: "losses", title: "Losses", cell: (m) => fmt(m.losses), num: true },
    { key: "ties", title: "Ties", cell: (m) => fmt(m.ties), num: true },
    { key: "both_bad", title: "Both bad", cell: (m) => fmt(m.both_bad), num: true },
    { key: "win_rate", title: "Win rate (95% interval)", cell: (m) => withInterval(m.win_rate, m.win_rate_interval, true), num: true },
  ].filter((c) => rows.some((m) => present(m[c.key])));
  const parts = [];
  const totals = stats && stats.totals && typeof stats.totals === "object" ? Object.entries(stats.totals) : [];
  if (totals.length) {
    parts.push(h("p", { class: "muted totals" }, totals.map(([k, v]) => `${k.replaceAll("_", " ")}: ${fmt(v)}`).join(" · ")));
  }
  if (!rows.length) {
    parts.push(h("p", { class: "muted" }, "No model has a vote yet."));
    return parts;
  }
  parts.push(h("div", { class: "table-wrap" }, h("table", { class: "standings-table" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.title)))),
    h("tbody", {}, rows.map((m) => h("tr", { "data-model": nameOf(m) }, columns.map((c) => h("td", { class: c.num ? "num" : "name" }, c.cell(m)))))))));
  const design = stats.design && typeof stats.design === "object" ? stats.design : null;
  if (design && design.leader && design.runner_up) {
    const pair = `${design.leader} and ${design.runner_up}`;
    let line = null;
    if (design.separated) line = `The votes so far tell ${pair} apart.`;
    else if (design.further_votes > 0) line = `About ${fmt(design.further_votes)} more votes between ${pair} would tell them apart (80% of the time, if the current rate holds).`;
    else if (design.further_votes === 0) line = `${pair} have had the votes a test needs and are not told apart: any difference is small.`;
    else if (design.reason) line = `${pair}: ${design.reason}.`;
    if (line) parts.push(h("p", { class: "muted design" }, line));
  }
  // Checks on the voters (prefkit.arena.stats.voter_checks): said only when one is away from 50%.
  const checkWords = { left_reply: "the left reply (A)", longer_reply: "the longer reply" };
  for (const check of Array.isArray(stats.checks) ? stats.checks : []) {
    if (!check || !check.flagged || !(check.name in checkWords)) continue;
    const share = withInterval(check.share, check.interval, true);
    const what = check.name === "left_reply" ? "voters favour one side" : check.share > 0.5 ? "the votes reward length as well as content" : "the votes reward brevity as well as content";
    parts.push(h("p", { class: "note check", "data-check": check.name }, `Check: ${checkWords[check.name]} won ${share} of ${fmt(check.votes)} decisive votes: ${what}.`));
  }
  return parts;
}

// The view. Resolves once built; rejects (AuthError, a server without the arena) so app.js can retry.
export async function arenaView(root, { onError }) {
  const info = await getJSON("ui/api/arena");
  const title = h("div", { class: "bar" }, h("h1", {}, "Arena"),
    h("span", { class: "muted" }, "Two served models answer one prompt, unnamed and in random order; vote, then see which was which."));
  if (!info.enabled) {
    append(clear(root), [title,
      h("p", {}, info.reason || "The arena is off on this server."),
      h("p", { class: "muted" }, "A battle needs two or more served models (the base and an adapter, or two adapters). Start the server with them:"),
      h("pre", {}, HOW_TO_START)]);
    return;
  }

  const cap = Number(info.max_tokens) > 0 ? Number(info.max_tokens) : 256;
  const sides = { a: new Side("a"), b: new Side("b") };
  const shown = h("div", { class: "arena-prompt", hidden: true }); // the prompt as the server echoed it
  const status = h("p", { class: "arena-status", "aria-live": "polite" });
  const count = h("span", { class: "arena-count muted" }, votesLine(info.votes));
  const voteButtons = CHOICES.map((c) =>
    h("button", { type: "button", class: "vote", "data-winner": c.winner, disabled: true, title: `${c.label} (key ${c.key})` }, c.label, " ", h("kbd", {}, c.key)));
  const newBattle = h("button", { type: "button" }, "New battle");
  const votes = h("div", { class: "arena-votes", role: "group", "aria-label": "vote", tabindex: "-1" }, voteButtons, newBattle);

  const prompt = h("textarea", { rows: 3, placeholder: "A prompt for both models (Enter sends, Shift+Enter for a new line)", "aria-label": "prompt" });
  const drawnBox = h("div", { class: "drawn", hidden: true });
  const battle = h("button", { type: "submit", class: "primary" }, "Battle");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const draw = h("button", { type: "button", hidden: !(info.prompts > 0) }, "Draw a prompt");
  const form = h("form", { class: "composer" }, h("div", { class: "prompt-col" }, drawnBox, prompt), h("div", { class: "buttons" }, battle, stop, draw));

  const maxTokens = h("input", { type: "number", min: 1, max: cap, value: Math.min(256, cap), "aria-label": "max tokens" });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, placeholder: "model's default", "aria-label": "temperature" });
  const settings = h("details", { class: "settings" }, h("summary", {}, "Settings"),
    h("label", {}, "Max tokens ", maxTokens, h("span", { class: "muted" }, ` (at most ${cap})`)),
    h("label", {}, "Temperature ", temperature));
  const voter = h("input", { type: "text", maxlength: 100, placeholder: "optional", "aria-label": "your name", autocomplete: "off" });
  voter.value = localStorage.getItem(VOTER_KEY) || "";
  voter.addEventListener("change", () => {
    const name = voter.value.trim();
    if (name) localStorage.setItem(VOTER_KEY, name);
    else localStorage.removeItem(VOTER_KEY);
  });

  const standingsBody = h("div", {});
  // Hidden until this session's first vote, and collapsed: a voter who has not voted yet sees no ranking
  // that could sway the vote.
  const standings = h("details", { class: "standings", hidden: true }, h("summary", {}, "Standings"), standingsBody);

  append(clear(root), [
    title,
    h("div", { class: "bar arena-meta" }, count, h("label", { class: "voter" }, "Your name ", voter)),
    shown,
    h("div", { class: "panes panes-2" }, SIDES.map((s) => sides[s].root)),
    votes,
    status,
    form,
    settings,
    standings,
  ]);

  // What the page knows about the battle on screen.
  let current = null; // { id, voted, voting } once the server has named the battle
  let controller = null;
  let drawn = null; // the messages of a drawn prompt, until sent or dropped

  const bothDone = () => SIDES.every((s) => sides[s].state === "done");
  const updateVoteButtons = () => {
    const open = current && current.id && !current.voted && !current.voting && !controller && bothDone();
    for (const b of voteButtons) b.disabled = !open;
    return open;
  };
  const say = (text, isError = false) => {
    status.textContent = text;
    status.classList.toggle("error", isError);
  };

  function showPrompt(messages) {
    const list = Array.isArray(messages) ? messages : [];
    append(clear(shown), list.map((m) => h("div", { class: `msg ${m.role === "assistant" ? "assistant" : "user"}` },
      h("span", { class: "role" }, `${m.role}: `), String(m.content))));
    shown.hidden = !list.length;
  }

  function dropDrawn() {
    drawn = null;
    clear(drawnBox);
    drawnBox.hidden = true;
  }

  // A drawn prompt: its last user message goes into the box (to read, or to edit); any messages before it
  // (a system message, earlier turns) are shown above and sent with it.
  function useDrawn(messages, index) {
    const list = Array.isArray(messages) ? messages.filter((m) => m && typeof m.content === "string") : [];
    const last = list[list.length - 1];
    const endsWithUser = last && last.role === "user";
    drawn = { context: endsWithUser ? list.slice(0, -1) : list, index, messages: list, last: endsWithUser ? last.content : null };
    prompt.value = endsWithUser ? last.content : "";
    clear(drawnBox);
    if (drawn.context.length) {
      append(drawnBox, [
        h("div", { class: "drawn-head muted" }, "Drawn prompt: these messages come first ",
          h("button", { type: "button", class: "link", onclick: () => dropDrawn() }, "drop them")),
        drawn.context.map((m) => h("div", { class: "msg user" }, h("span", { class: "role" }, `${m.role}: `), m.content)),
      ]);
      drawnBox.hidden = false;
    } else {
      drawnBox.hidden = true;
    }
    prompt.focus();
  }

  function clearBattle() {
    current = null;
    for (const s of SIDES) sides[s].reset();
    showPrompt([]);
    say("");
    for (const b of voteButtons) {
      b.classList.remove("chosen");
      b.removeAttribute("aria-pressed");
    }
    updateVoteButtons();
  }

  async function start() {
    const text = prompt.value.trim();
    if (controller || (!text && !(drawn && drawn.context.length))) return;
    // A typed prompt goes as text; a drawn one as its messages, so that a system message or earlier turns
    // in the prompts file reach the models as they are written there.
    // A drawn prompt left as it was goes exactly as drawn (not trimmed), so the server can tell it is the
    // file's and record its place (prompt_index); an edited one goes as edited, and is recorded as typed.
    const untouched = drawn && (drawn.last === null ? prompt.value === "" : prompt.value === drawn.last);
    const asDrawn = untouched ? drawn.messages : drawn ? [...drawn.context, ...(text ? [{ role: "user", content: text }] : [])] : null;
    const body = { prompt: asDrawn || text, stream: true };
    if (drawn && Number.isInteger(drawn.index)) body.prompt_index = drawn.index;
    const limit = Math.min(cap, Math.max(1, Math.floor(Number(maxTokens.value)) || Math.min(256, cap)));
    maxTokens.value = limit;
    body.max_tokens = limit;
    if (temperature.value !== "") body.temperature = Number(temperature.value);

    clearBattle();
    controller = new AbortController();
    const mine = controller;
    const fight = { id: null, voted: false, voting: false };
    current = fight;
    for (const s of SIDES) sides[s].setState("streaming");
    battle.disabled = true;
    stop.disabled = false;
    say("The two models are answering…");
    try {
      await postStream("ui/api/arena/battles", body, (event) => {
        if (current !== fight) return; // "New battle" was pressed: this one is off the screen
        if (event.id && !event.side) {
          fight.id = String(event.id);
          showPrompt(event.prompt);
          prompt.value = ""; // sent: the box is free for the next prompt
          dropDrawn();
          return;
        }
        const side = sides[event.side];
        if (!side) return;
        if (typeof event.text === "string") side.add(event.text);
        if (event.finish_reason) side.done(event.finish_reason, limit);
      }, mine.signal);
      if (current === fight) {
        for (const s of SIDES) if (sides[s].state !== "done") sides[s].fail("[the stream ended before this reply did]");
        if (bothDone()) say("Both replies are in. Which is better?");
        else say("The battle ended early: it takes no vote. Start a new one.", true);
      }
    } catch (err) {
      if (err instanceof AuthError) onError(err);
      if (current === fight) {
        const stopped = err.name === "AbortError";
        for (const s of SIDES) if (sides[s].state !== "done") sides[s].fail(stopped ? "[stopped]" : `[${err.message}]`);
        if (!fight.id) current = null; // refused before it started (a bad prompt, busy, over the cap)
        say(stopped ? "Stopped: a battle with a reply cut short takes no vote." : busyOr(err), !stopped);
      }
      fight.voted = true; // a battle that did not finish takes no vote
    } finally {
      if (controller === mine) controller = null;
      battle.disabled = false;
      stop.disabled = true;
    }
    if (current !== fight) return;
    if (updateVoteButtons()) votes.focus({ preventScroll: true }); // the next step; keys 1-4 vote from here
    else prompt.focus();
  }

  function busyOr(err) {
    if (err instanceof ApiError && err.status === 429) return `The server is busy: ${err.message} Try again in a moment.`;
    return `Error: ${err.message}`;
  }

  async function vote(winner) {
    if (!updateVoteButtons()) return;
    const battleNow = current;
    battleNow.voting = true; // one vote per battle: the buttons stay off from the first click
    updateVoteButtons();
    const body = { winner };
    const name = voter.value.trim();
    if (name) body.voter = name.slice(0, 100);
    try {
      const answer = await postJSON(`ui/api/arena/battles/${encodeURIComponent(battleNow.id)}/vote`, body);
      battleNow.voted = true;
      if (current !== battleNow) return; // a new battle started meanwhile; the vote counted all the same
      for (const s of SIDES) sides[s].reveal(answer[s] && answer[s].model ? String(answer[s].model) : "?", verdictOf(s, answer.winner || winner));
      const chosen = voteButtons.find((b) => b.dataset.winner === (answer.winner || winner));
      if (chosen) {
        chosen.classList.add("chosen");
        chosen.setAttribute("aria-pressed", "true");
      }
      if (typeof answer.votes === "number") count.textContent = votesLine(answer.votes);
      say("Vote recorded. New battle, or type the next prompt.");
      refreshStandings();
    } catch (err) {
      if (err instanceof AuthError) onError(err);
      // Gone or already counted: this battle takes no vote any more. Anything else (the network, a busy
      // server, a side still finishing) may pass: the buttons come back.
      const final = err instanceof ApiError && (err.code === "already_voted" || err.code === "battle_not_found" || err.status === 404);
      if (final) battleNow.voted = true;
      say(err.code === "battle_not_found" ? "This battle has expired on the server; start a new one." : `Vote not recorded: ${err.message}`, true);
    } finally {
      battleNow.voting = false;
      updateVoteButtons();
    }
  }

  let standingsAsked = 0;
  async function refreshStandings() {
    const asked = ++standingsAsked;
    standings.hidden = false;
    try {
      const stats = await getJSON("ui/api/arena/stats");
      if (asked === standingsAsked) append(clear(standingsBody), standingsTable(stats));
    } catch (err) {
      if (err instanceof AuthError) onError(err);
      else if (asked === standingsAsked) append(clear(standingsBody), [h("p", { class: "error" }, `Standings unavailable: ${err.message}`)]);
    }
  }

  draw.addEventListener("click", async () => {
    draw.disabled = true;
    try {
      const drawnPrompt = await getJSON("ui/api/arena/prompt");
      useDrawn(drawnPrompt.prompt, drawnPrompt.index);
      say("");
    } catch (err) {
      if (err instanceof AuthError) onError(err);
      else say(err.code === "no_prompts" ? "This server has no prompts file to draw from." : `Error: ${err.message}`, true);
    } finally {
      draw.disabled = false;
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      start();
    }
  });
  stop.addEventListener("click", () => controller && controller.abort());
  for (const b of voteButtons) b.addEventListener("click", () => vote(b.dataset.winner));
  newBattle.addEventListener("click", () => {
    if (controller) controller.abort();
    clearBattle();
    dropDrawn();
    prompt.value = "";
    prompt.focus();
  });
  // Keys 1-4 vote while the Arena is on screen and no text box has the focus (typing a prompt that
  // starts with "1" must not vote).
  document.addEventListener("keydown", (event) => {
    if (root.hidden || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (event.target instanceof Element && event.target.closest("input, textarea, select, [contenteditable]")) return;
    const choice = CHOICES.find((c) => c.key === event.key);
    if (choice && updateVoteButtons()) {
      event.preventDefault();
      vote(choice.winner);
    }
  });
}
