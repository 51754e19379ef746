// The Chat and Side-by-side tabs: the served models through /v1/chat/completions, streamed. A pane is
// one conversation with one model; side by side sends each prompt to two panes at once.

import { AuthError, streamChat } from "./api.js";
import { append, clear, h } from "./dom.js";

class Pane {
  constructor(models, model, index) {
    this.history = [];
    this.select = h("select", { "aria-label": "model", class: "model" }, models.map((m) => h("option", { value: m.id }, label(m))));
    this.select.value = model;
    this.list = h("div", { class: "messages", "aria-live": "polite" });
    this.select.addEventListener("change", () => this.reset()); // a conversation belongs to one model
    this.root = h("div", { class: "pane", "data-pane": index }, h("div", { class: "pane-head" }, this.select), this.list);
  }

  reset() {
    this.history = [];
    clear(this.list);
  }

  bubble(role, text) {
    const el = h("div", { class: `msg ${role}` }, text);
    this.list.append(el);
    el.scrollIntoView({ block: "end" });
    return el;
  }

  async send(text, settings, signal) {
    const messages = [...(settings.system ? [{ role: "system", content: settings.system }] : []), ...this.history, { role: "user", content: text }];
    this.bubble("user", text);
    const reply = this.bubble("assistant", "");
    reply.setAttribute("data-state", "streaming");
    let content = "";
    const body = { model: this.select.value, messages, max_tokens: settings.maxTokens };
    if (settings.temperature !== null) body.temperature = settings.temperature;
    try {
      const finish = await streamChat(body, (piece) => {
        content += piece;
        reply.textContent = content;
      }, signal);
      this.history.push({ role: "user", content: text }, { role: "assistant", content });
      reply.setAttribute("data-state", "done");
      if (finish === "length") reply.after(h("p", { class: "note muted" }, `cut off at ${settings.maxTokens} tokens`));
    } catch (err) {
      reply.setAttribute("data-state", "error");
      reply.classList.add("error");
      reply.textContent = content + (err.name === "AbortError" ? " [stopped]" : `\n[${err.message}]`);
      if (err instanceof AuthError) throw err;
    }
  }
}

function label(model) {
  return model.parent ? `${model.id} (adapter on ${model.parent})` : `${model.id} (base)`;
}

// The view: panes (1 for Chat, 2 for Side by side), one prompt box, settings, send and stop.
export function chatView(root, models, paneCount, { onError }) {
  if (!models.length) {
    append(clear(root), [
      h("h1", {}, paneCount === 1 ? "Chat" : "Side by side"),
      h("p", { class: "muted" }, "This server serves no model. Start it with one: prefkit serve --model M --adapter NAME=RUN --ui (or prefkit ui --runs DIR --model M)."),
    ]);
    return;
  }
  const base = models.find((m) => !m.parent) || models[0];
  const other = models.find((m) => m.id !== base.id) || base;
  const panes = paneCount === 1 ? [new Pane(models, base.id, 0)] : [new Pane(models, base.id, 0), new Pane(models, other.id, 1)];
  const prompt = h("textarea", { rows: 3, placeholder: "Message (Enter sends, Shift+Enter for a new line)", "aria-label": "message" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const reset = h("button", { type: "button" }, "New conversation");
  const system = h("input", { type: "text", placeholder: "optional", "aria-label": "system message" });
  const maxTokens = h("input", { type: "number", min: 1, value: 256, "aria-label": "max tokens" });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, placeholder: "model's default", "aria-label": "temperature" });
  const form = h("form", { class: "composer" }, prompt, h("div", { class: "buttons" }, send, stop, reset));
  const settings = h("details", { class: "settings" }, h("summary", {}, "Settings"),
    h("label", {}, "System message ", system),
    h("label", {}, "Max tokens ", maxTokens),
    h("label", {}, "Temperature ", temperature));
  const title = paneCount === 1 ? "Chat" : "Side by side";
  const hint = paneCount === 1 ? "Replies stream from /v1/chat/completions, as any OpenAI client gets them." : "One prompt, two models at once: the base and a trained adapter, or two methods.";
  append(clear(root), [h("div", { class: "bar" }, h("h1", {}, title), h("span", { class: "muted" }, hint)), h("div", { class: `panes panes-${paneCount}` }, panes.map((p) => p.root)), form, settings]);

  let controller = null;
  const submit = async () => {
    const text = prompt.value.trim();
    if (!text || controller) return;
    const temp = temperature.value === "" ? null : Number(temperature.value);
    const options = { system: system.value.trim(), maxTokens: Math.max(1, Number(maxTokens.value) || 256), temperature: temp };
    controller = new AbortController();
    prompt.value = "";
    send.disabled = true;
    stop.disabled = false;
    try {
      await Promise.all(panes.map((p) => p.send(text, options, controller.signal)));
    } catch (err) {
      onError(err);
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
      prompt.focus();
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  stop.addEventListener("click", () => controller && controller.abort());
  reset.addEventListener("click", () => panes.forEach((p) => p.reset()));
}
