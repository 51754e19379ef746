// The Runs tab: the list of runs, one run (live curves, config, evaluations), and runs overlaid.

import { AuthError, getJSON } from "./api.js";
import { COLOURS, lineChart, pointsOf } from "./chart.js";
import { ago, append, clear, fmt, h } from "./dom.js";

const STATUSES = new Set(["running", "finished", "interrupted", "unknown"]);
const LIVE_POLL_MS = 2000; // a running run's metrics
const IDLE_POLL_MS = 15000; // a run that is not running (it may be resumed)
const LIST_POLL_MS = 5000;

// Charts of one run: [title, [[metric, label, colour, dashed], ...]].
const RUN_CHARTS = [
  ["loss", [["loss", "train", COLOURS[0], false], ["eval_loss", "eval", COLOURS[4], true]]],
  ["reward margin", [["rewards/margins", "train", COLOURS[0], false], ["eval_rewards/margins", "eval", COLOURS[4], true]]],
  ["reward accuracy", [["rewards/accuracies", "train", COLOURS[0], false], ["eval_rewards/accuracies", "eval", COLOURS[4], true]]],
  ["rewards", [
    ["rewards/chosen", "chosen", COLOURS[2], false],
    ["rewards/rejected", "rejected", COLOURS[1], false],
    ["eval_rewards/chosen", "eval chosen", COLOURS[2], true],
    ["eval_rewards/rejected", "eval rejected", COLOURS[1], true],
  ]],
];
// Charts of runs overlaid: one colour per run, train solid and eval dashed (as prefkit compare draws them).
const COMPARE_CHARTS = [["loss", "loss"], ["reward margin", "rewards/margins"], ["reward accuracy", "rewards/accuracies"]];

const SETTING_NAMES = {
  finetuning_type: "",
  learning_rate: "lr",
  pref_beta: "β",
  simpo_gamma: "γ",
  pref_ftx: "ftx",
  lora_rank: "rank",
  per_device_train_batch_size: "batch",
  gradient_accumulation_steps: "accum",
  max_steps: "steps",
  num_train_epochs: "epochs",
  cutoff_len: "cutoff",
  dataset: "data",
  train_file: "data",
};

const selected = new Set(); // runs ticked for comparison, kept while the tab is open

const runPath = (id, rest = "") => `ui/api/runs/${encodeURIComponent(id)}${rest}`;
const basename = (path) => String(path).split(/[\\/]/).filter(Boolean).pop() || String(path);

export function statusBadge(status, detail) {
  const known = STATUSES.has(status) ? status : "unknown";
  return h("span", { class: `status status-${known}`, title: detail || "" }, status || "unknown");
}

function settingsText(settings) {
  const parts = [];
  for (const [key, short] of Object.entries(SETTING_NAMES)) {
    if (!(key in settings)) continue;
    const value = settings[key];
    const shown = key === "train_file" || key === "dataset" ? basename(value) : fmt(value);
    parts.push(short ? `${short} ${shown}` : shown);
  }
  return parts.join(" · ");
}

// metrics.jsonl as the server hands it out: the records so far, fetched from where the last poll ended.
export class MetricsFeed {
  constructor(id) {
    this.id = id;
    this.records = [];
    this.cursor = null;
    this.problems = [];
  }

  async poll() {
    let changed = false;
    for (;;) {
      const since = this.cursor ? `?since=${encodeURIComponent(this.cursor)}` : "";
      const chunk = await getJSON(runPath(this.id, `/metrics${since}`));
      if (chunk.reset) {
        this.records = [];
        this.problems = [];
        changed = true;
      }
      if (chunk.records.length) {
        this.records = this.records.concat(chunk.records);
        changed = true;
      }
      this.problems = this.problems.concat(chunk.problems);
      this.cursor = chunk.cursor;
      if (!chunk.more) return changed;
    }
  }
}

// A view that refreshes itself; stop() ends its timer when the page moves on. After an error it says so
// and tries again a little later (a server restarting, a run folder being replaced), except when the key
// is refused: then the page asks for it and rebuilds the view.
function every(ms, work, onError) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    let next = ms;
    try {
      const asked = await work();
      if (typeof asked === "number") next = asked;
    } catch (err) {
      if (stopped) return;
      onError(err);
      if (err instanceof AuthError) return;
      next = Math.max(ms, IDLE_POLL_MS);
    }
    if (!stopped) timer = setTimeout(run, next);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function problemList(problems) {
  if (!problems || !problems.length) return null;
  return h("ul", { class: "problems" }, problems.map((p) => h("li", {}, p)));
}

// ---------------------------------------------------------------------------------------- the list

export function runsList(root, { onError }) {
  const heading = h("h1", {}, "Runs");
  const compareButton = h("button", { type: "button", class: "primary", disabled: true }, "Compare");
  const hint = h("span", { class: "muted" }, "Tick two or more runs to overlay their curves.");
  const table = h("div", { class: "table-wrap" });
  const loose = h("div");
  append(clear(root), [h("div", { class: "bar" }, heading, compareButton, hint), table, loose]);

  const syncButton = () => {
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = `Compare${selected.size ? ` (${selected.size})` : ""}`;
  };
  compareButton.addEventListener("click", () => {
    location.hash = `#compare/${[...selected].map(encodeURIComponent).join(",")}`;
  });

  const render = (data) => {
    const known = new Set(data.runs.map((r) => r.id));
    for (const id of [...selected]) if (!known.has(id)) selected.delete(id);
    syncButton();
    const head = ["", "run", "status", "method", "model", "step", "loss", "margin", "accuracy", "settings", "updated"];
    const rows = data.runs.map((run) => {
      const box = h("input", { type: "checkbox", "aria-label": `select ${run.name}`, checked: selected.has(run.id) });
      box.addEventListener("change", () => {
        if (box.checked) selected.add(run.id);
        else selected.delete(run.id);
        syncButton();
      });
      const latest = run.latest || {};
      const step = run.max_steps ? `${fmt(run.step)} / ${fmt(run.max_steps)}` : fmt(run.step);
      const evals = run.evals.length ? h("span", { class: "tag" }, `${run.evals.length} eval`) : null;
      return h(
        "tr",
        { "data-run": run.id },
        h("td", {}, box),
        h("td", { class: "name" }, h("a", { href: `#run/${encodeURIComponent(run.id)}` }, run.name), " ", evals, problemList(run.problems)),
        h("td", {}, statusBadge(run.status, run.status_detail)),
        h("td", {}, run.method || "—"),
        h("td", { title: run.model || "" }, run.model ? basename(run.model) : "—"),
        h("td", { class: "num" }, step),
        h("td", { class: "num" }, fmt(latest.loss)),
        h("td", { class: "num" }, fmt(latest["rewards/margins"])),
        h("td", { class: "num" }, fmt(latest["rewards/accuracies"])),
        h("td", { class: "settings" }, settingsText(run.settings || {})),
        h("td", { title: run.updated ? new Date(run.updated * 1000).toLocaleString() : "" }, ago(run.updated)),
      );
    });
    const body = data.runs.length
      ? h("table", { class: "runs" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No prefkit runs in this folder yet (a run folder holds prefkit_run.json, training_config.json or metrics.jsonl).");
    append(clear(table), [body, data.truncated ? h("p", { class: "error" }, "The folder is too large: the scan stopped early.") : null]);
    clear(loose);
    if (data.evals.length) {
      append(loose, [
        h("h2", {}, "Evaluations of no run here"),
        h("ul", {}, data.evals.map((e) => h("li", {}, h("a", { href: `#eval/${encodeURIComponent(e.id)}` }, e.name)))),
      ]);
    }
  };
  return every(LIST_POLL_MS, async () => render(await getJSON("ui/api/runs")), onError);
}

// ---------------------------------------------------------------------------------------- one run

function configSection(config) {
  const record = config.record;
  const section = h("section", { class: "config" }, h("h2", {}, "Resolved config"));
  if (!record) {
    append(section, [h("p", { class: "muted" }, "No training_config.json (yet)."), problemList(config.problems)]);
    return section;
  }
  const resolved = record.config && typeof record.config === "object" ? record.config : {};
  const rows = Object.entries(resolved).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(v))));
  append(section, [
    problemList(config.problems),
    h("table", { class: "kv" }, h("tbody", {}, rows)),
    h("details", {}, h("summary", {}, "Everything training_config.json records"), h("pre", {}, JSON.stringify(record, null, 2))),
    config.marker ? h("details", {}, h("summary", {}, "Run marker (prefkit_run.json)"), h("pre", {}, JSON.stringify(config.marker, null, 2))) : null,
  ]);
  return section;
}

function metricTable(title, model, baseline) {
  if (!model || typeof model !== "object") return null;
  const names = Object.keys(model).filter((k) => typeof model[k] === "number" || model[k] === null);
  if (!names.length) return null;
  const head = baseline ? ["metric", "baseline", "model", "change"] : ["metric", "model"];
  const rows = names.map((name) => {
    const m = model[name];
    const cells = [h("th", {}, name)];
    if (baseline) {
      const b = baseline[name];
      const change = typeof b === "number" && typeof m === "number" ? (m - b >= 0 ? "+" : "") + fmt(m - b) : "";
      cells.push(h("td", { class: "num" }, fmt(b)), h("td", { class: "num" }, fmt(m)), h("td", { class: "num" }, change));
    } else {
      cells.push(h("td", { class: "num" }, fmt(m)));
    }
    return h("tr", {}, cells);
  });
  return h("div", {}, h("h4", {}, title), h("table", { class: "kv metrics" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows)));
}

export function evalBlock(ev) {
  const report = ev.report || {};
  const settings = report.settings || {};
  const model = report.model || {};
  const baseline = report.baseline || null;
  const block = h("article", { class: "eval", "data-eval": ev.id }, h("h3", {}, ev.name));
  if (settings.model) {
    const what = settings.adapter ? `${settings.model} + ${settings.adapter}` : settings.model;
    append(block, [h("p", { class: "muted" }, `${what} on ${(settings.data || []).join(", ")} (${fmt(settings.pairs)} pairs)`)]);
  }
  append(block, [
    problemList(ev.problems),
    h("div", { class: "eval-tables" },
      metricTable("Preference (held-out pairs)", model.preference, baseline && baseline.preference),
      metricTable("Generation (the model's own replies)", model.generation, baseline && baseline.generation),
      metricTable("Judge", report.judge, null)),
  ]);
  if (ev.samples && ev.samples.length) {
    const items = ev.samples.map((s) =>
      h("li", {},
        h("p", { class: "prompt" }, fmt(s.prompt)),
        "baseline_reply" in s ? h("p", {}, h("b", {}, "baseline: "), fmt(s.baseline_reply)) : null,
        h("p", {}, h("b", {}, "model: "), fmt(s.reply))));
    append(block, [h("details", {}, h("summary", {}, `Sample replies (${ev.samples.length})`), h("ol", { class: "samples" }, items))]);
  }
  if (ev.markdown) append(block, [h("details", {}, h("summary", {}, "eval.md"), h("pre", {}, ev.markdown))]);
  return block;
}

export function runView(root, id, { onError }) {
  const title = h("h1", {}, "…");
  const badge = h("span");
  const meta = h("p", { class: "muted" });
  const problems = h("div");
  const charts = h("div", { class: "charts" });
  const evals = h("div");
  const config = h("div");
  append(clear(root), [
    h("p", {}, h("a", { href: "#runs" }, "← all runs")),
    h("div", { class: "bar" }, title, badge),
    meta,
    problems,
    charts,
    evals,
    config,
  ]);
  const feed = new MetricsFeed(id);
  let haveConfig = false;
  let evalCount = -1;

  const drawCharts = (run) => {
    const nodes = RUN_CHARTS.map(([name, lines]) =>
      lineChart(
        name,
        lines.map(([key, label, colour, dashed]) => ({ label, colour, dashed, points: pointsOf(feed.records, key) })),
        { xMax: run.max_steps },
      ),
    ).filter((figure, i) => i === 0 || !figure.querySelector(".empty") || run.stage !== "sft");
    append(clear(charts), nodes);
  };

  return every(LIVE_POLL_MS, async () => {
    const run = await getJSON(runPath(id));
    document.title = `${run.name} · prefkit`;
    title.textContent = run.name;
    append(clear(badge), [statusBadge(run.status, run.status_detail), " ", h("span", { class: "muted" }, run.status_detail)]);
    const step = run.max_steps ? `step ${fmt(run.step)} of ${fmt(run.max_steps)}` : `step ${fmt(run.step)}`;
    const seconds = run.train_seconds ? ` · trained in ${fmt(run.train_seconds)} s` : "";
    meta.textContent = `${run.method || "?"} · ${run.model || "model unknown"} · ${step}${seconds}`;
    const changed = await feed.poll();
    if (changed || !charts.firstChild) drawCharts(run);
    append(clear(problems), [problemList([...run.problems, ...feed.problems])]);
    if (!haveConfig) {
      const cfg = await getJSON(runPath(id, "/config"));
      haveConfig = Boolean(cfg.record);
      append(clear(config), [configSection(cfg)]);
    }
    if (run.evals.length !== evalCount) {
      evalCount = run.evals.length;
      const data = evalCount ? await getJSON(runPath(id, "/evals")) : { evals: [] };
      append(clear(evals), data.evals.length ? [h("h2", {}, "Evaluations"), data.evals.map(evalBlock)] : []);
    }
    return run.status === "running" ? LIVE_POLL_MS : IDLE_POLL_MS;
  }, onError);
}

export function evalView(root, id, { onError }) {
  append(clear(root), [h("p", {}, h("a", { href: "#runs" }, "← all runs")), h("p", { class: "muted" }, "…")]);
  getJSON(`ui/api/evals/${encodeURIComponent(id)}`)
    .then((ev) => append(clear(root), [h("p", {}, h("a", { href: "#runs" }, "← all runs")), evalBlock(ev)]))
    .catch(onError);
  return () => {};
}

// ---------------------------------------------------------------------------------------- overlay

export function compareView(root, ids, { onError }) {
  const charts = h("div", { class: "charts" });
  const summary = h("div", { class: "table-wrap" });
  const differing = h("div", { class: "table-wrap" });
  append(clear(root), [
    h("p", {}, h("a", { href: "#runs" }, "← all runs")),
    h("h1", {}, `${ids.length} runs overlaid`),
    charts,
    h("h2", {}, "Runs"),
    summary,
    h("h2", {}, "Settings that differ"),
    differing,
  ]);
  const feeds = ids.map((id) => new MetricsFeed(id));
  const query = ids.map((id) => `id=${encodeURIComponent(id)}`).join("&");

  return every(LIVE_POLL_MS, async () => {
    const data = await getJSON(`ui/api/compare?${query}`);
    await Promise.all(feeds.map((f) => f.poll()));
    const runs = data.runs;
    append(clear(charts), COMPARE_CHARTS.map(([name, key]) =>
      lineChart(name, runs.flatMap((run, i) => [
        { label: `${run.name} (train)`, colour: COLOURS[i % COLOURS.length], dashed: false, points: pointsOf(feeds[i].records, key) },
        { label: `${run.name} (eval)`, colour: COLOURS[i % COLOURS.length], dashed: true, points: pointsOf(feeds[i].records, `eval_${key}`) },
      ]))));
    const head = ["run", "status", "method", "step", "loss", "margin", "accuracy", "eval loss"];
    const last = (feed, key) => {
      const points = pointsOf(feed.records, key).filter((p) => p[1] !== null);
      return points.length ? points[points.length - 1][1] : null;
    };
    const rows = runs.map((run, i) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.borderColor = COLOURS[i % COLOURS.length];
      return h("tr", {},
        h("td", { class: "name" }, swatch, h("a", { href: `#run/${encodeURIComponent(run.id)}` }, run.name)),
        h("td", {}, statusBadge(run.status, run.status_detail)),
        h("td", {}, run.method || "—"),
        h("td", { class: "num" }, fmt(run.step)),
        ...["loss", "rewards/margins", "rewards/accuracies", "eval_loss"].map((k) => h("td", { class: "num" }, fmt(last(feeds[i], k)))));
    });
    append(clear(summary), [h("table", { class: "runs" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows))]);
    const entries = Object.entries(data.differing);
    append(clear(differing), [entries.length
      ? h("table", { class: "kv" },
          h("thead", {}, h("tr", {}, h("th", {}, "setting"), runs.map((r) => h("th", {}, r.name)))),
          h("tbody", {}, entries.map(([k, values]) => h("tr", {}, h("th", {}, k), values.map((v) => h("td", {}, fmt(v)))))))
      : h("p", { class: "muted" }, "None: the runs' resolved configs are the same.")]);
    return runs.some((r) => r.status === "running") ? LIVE_POLL_MS : IDLE_POLL_MS;
  }, onError);
}
