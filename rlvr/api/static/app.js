// rlvr dashboard: a jobs table with a submit form, and a live page per job.
// Plain JS, no build step. Data: the /v1 REST API; live updates: the job's Server-Sent
// Events stream, read with fetch() so the bearer token can be sent as a header.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (sel) => document.querySelector(sel);

// ---------------------------------------------------------------- API ------------------
function token() { return localStorage.getItem("rlvr-token") || ""; }

function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: authHeaders(opts.headers || {}) });
  if (res.status === 401) {
    askToken("This service needs its API token (RLVR_API_TOKEN):");
    throw new Error("unauthorized");
  }
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) { const e = new Error(`HTTP ${res.status}`); e.status = res.status; e.body = body; throw e; }
  return body;
}

function askToken(message) {
  const t = prompt(message || "API bearer token (empty: none)", token());
  if (t === null) return;
  if (t) localStorage.setItem("rlvr-token", t); else localStorage.removeItem("rlvr-token");
  route();
}

// Read text/event-stream with fetch (EventSource cannot send an Authorization header).
async function streamEvents(jobId, after, onEvent, signal) {
  const res = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events?after=${after}`,
                          { headers: authHeaders(), signal });
  if (!res.ok) throw new Error(`events: HTTP ${res.status}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let kind = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        else if (line.startsWith("id:")) id = Number(line.slice(3).trim());
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")), id);
    }
  }
}

// ---------------------------------------------------------------- helpers ---------------
function fmt(x, digits = 3) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

function age(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function statusBadge(status) { return el("span", { class: `status ${status}` }, status); }

// ---------------------------------------------------------------- routing ---------------
let pageTimers = [];
let pageAbort = null;

function leavePage() {
  pageTimers.forEach(clearInterval);
  pageTimers = [];
  if (pageAbort) pageAbort.abort();
  pageAbort = null;
}

function route() {
  leavePage();
  const m = location.hash.match(/^#\/jobs\/(.+)$/);
  const compare = location.hash.startsWith("#/compare");
  $("#view-jobs").hidden = !!m || compare;
  $("#view-job").hidden = !m;
  $("#view-compare").hidden = !compare;
  if (compare) showCompare(); else if (m) showJob(decodeURIComponent(m[1])); else showJobs();
}

// ---------------------------------------------------------------- jobs view -------------
async function loadJobs() {
  let out;
  try { out = await api("/v1/jobs?limit=100"); } catch (e) { return; }
  const tbody = $("#jobs-table tbody");
  tbody.replaceChildren();
  for (const j of out.jobs) {
    const actions = el("td");
    if (!TERMINAL.has(j.status)) {
      actions.append(el("button", { class: "secondary", onclick: (ev) => { ev.stopPropagation(); jobAction(j.id, "cancel"); } }, "Cancel"));
    } else if (j.status !== "succeeded") {
      actions.append(el("button", { class: "secondary", onclick: (ev) => { ev.stopPropagation(); jobAction(j.id, "resume"); } }, "Resume"));
    }
    tbody.append(el("tr", { class: "job-row", "data-job": j.id, onclick: () => { location.hash = `#/jobs/${encodeURIComponent(j.id)}`; } },
      el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)),
      el("td", {}, statusBadge(j.status)),
      el("td", { class: "num" }, `${j.step}/${j.max_steps}`),
      el("td", { class: "num" }, fmt(j.reward_mean)),
      el("td", { class: "num" }, fmt(j.accuracy, 2)),
      el("td", { class: "num" }, fmt(j.eval_accuracy, 2)),
      el("td", { class: "num" }, age(j.age_s)),
      actions));
  }
  $("#jobs-empty").hidden = out.jobs.length > 0;
  $("#jobs-count").textContent = out.total ? `(${out.total})` : "";
}

async function jobAction(id, action) {
  try { await api(`/v1/jobs/${encodeURIComponent(id)}/${action}`, { method: "POST" }); }
  catch (e) { alert(`${action} failed: ${e.body?.detail || e.message}`); }
  route();
}

let examples = [];
async function loadExamples() {
  try { examples = await api("/v1/examples"); } catch (e) { return; }
  const select = $("#example-select");
  select.replaceChildren(...examples.map((ex, i) => el("option", { value: i }, ex.name)));
  if (!$("#spec-text").value && examples.length) $("#spec-text").value = examples[0].yaml;
}

async function submitSpec() {
  const errors = $("#submit-errors");
  errors.replaceChildren();
  $("#submit-result").textContent = "submitting…";
  try {
    const out = await api("/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/yaml" }, body: $("#spec-text").value,
    });
    $("#submit-result").textContent = `queued ${out.id}`;
    location.hash = `#/jobs/${encodeURIComponent(out.id)}`;
  } catch (e) {
    $("#submit-result").textContent = "rejected";
    const detail = e.body?.detail;
    for (const d of Array.isArray(detail) ? detail : [{ loc: [], msg: detail || e.message }]) {
      const loc = (d.loc || []).filter((p) => p !== "body").join(".") || "spec";
      errors.append(el("li", {}, el("code", {}, loc), " ", d.msg));
    }
  }
}

function showJobs() {
  loadJobs();
  loadEvals("#evals-table", "#evals-empty");  // compare.js
  pageTimers.push(setInterval(() => loadEvals("#evals-table", "#evals-empty"), 3000));
  if (!examples.length) loadExamples();
  pageTimers.push(setInterval(loadJobs, 2000));
}

// ---------------------------------------------------------------- job view: charts ------
// Each chart: metric names drawn as lines; `band` draws mean ± std around the first.
const CHARTS = [
  { id: "chart-reward", title: "reward (mean ± std)", lines: ["reward/mean"], band: ["reward/mean", "reward/std"], prefix: "reward/" },
  { id: "chart-accuracy", title: "accuracy", lines: ["accuracy", "eval/accuracy"], range: [0, 1] },
  { id: "chart-length", title: "length (tokens)", lines: ["response/length_mean", "think/length_mean"] },
  { id: "chart-kl", title: "KL", lines: ["kl", "mismatch/kl"] },
  { id: "chart-entropy", title: "entropy", lines: ["entropy"] },
  { id: "chart-throughput", title: "rollout throughput (tok/s)", lines: ["throughput/rollout_tok_s"] },
  { id: "chart-loss", title: "loss", lines: ["loss", "pg_loss"] },
  { id: "chart-gradient", title: "gradient norm, skipped steps", lines: ["grad_norm", "learner/skipped_steps"] },
  { id: "chart-ratio", title: "importance ratio, clipping", lines: ["ratio_mean", "clip_frac", "tis_weight_mean"] },
  { id: "chart-async", title: "pipeline: share of time busy, staleness", lines: ["async/rollout_busy_frac", "async/learner_busy_frac", "async/staleness_mean", "async/mid_sequence_frac"] },
  { id: "chart-waits", title: "pipeline: waits (s)", lines: ["async/rollout_wait_s", "async/learner_wait_s"] },
  // Written only when the job sets the option: the chart shows up once they arrive.
  { id: "chart-refill", title: "dynamic sampling: refill rounds, groups kept", lines: ["batch/refill_rounds", "batch/groups_kept_frac"] },
  { id: "chart-curriculum", title: "curriculum: prompts by pass rate", lines: [], optional: [
    "curriculum/active", "curriculum/retired", "curriculum/pass_rate_eq0", "curriculum/pass_rate_lt50",
    "curriculum/pass_rate_ge50", "curriculum/pass_rate_eq1"] },
];
const COLORS = ["#2f6fde", "#e07b39", "#1a8d4a", "#8e44ad", "#c8392b", "#555"];

let series = new Map();   // metric name -> Map(step -> value)
let drawPending = false;

function addPoints(step, values) {
  for (const [name, v] of Object.entries(values)) {
    if (!series.has(name)) series.set(name, new Map());
    series.get(name).set(step, v);
  }
}

function sorted(name) {
  const s = series.get(name);
  if (!s) return { x: [], y: [] };
  const steps = [...s.keys()].sort((a, b) => a - b);
  return { x: steps, y: steps.map((k) => s.get(k)) };
}

function drawCharts() {
  drawPending = false;
  for (const chart of CHARTS) {
    const traces = [];
    if (chart.band) {
      const mean = sorted(chart.band[0]);
      const std = series.get(chart.band[1]);
      if (std && mean.x.length) {
        const up = mean.x.map((k, i) => mean.y[i] === null ? null : mean.y[i] + (std.get(k) || 0));
        const lo = mean.x.map((k, i) => mean.y[i] === null ? null : mean.y[i] - (std.get(k) || 0));
        traces.push({ x: mean.x, y: lo, name: "−std", mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" });
        traces.push({ x: mean.x, y: up, name: "± std", mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(47,111,222,0.15)", hoverinfo: "skip" });
      }
    }
    let names = [...chart.lines, ...(chart.optional || [])];
    if (chart.prefix) {  // per-verifier rewards: reward/<verifier>/mean
      for (const n of series.keys()) if (n.startsWith(chart.prefix) && n.endsWith("/mean") && n !== "reward/mean") names.push(n);
    }
    names.forEach((name, i) => {
      const s = sorted(name);
      if (!s.x.length) return;
      traces.push({ x: s.x, y: s.y, name, mode: s.x.length < 40 ? "lines+markers" : "lines",
                    line: { color: COLORS[i % COLORS.length], width: 2, dash: i && chart.prefix ? "dot" : "solid" },
                    marker: { size: 5 } });
    });
    const box = document.getElementById(chart.id);
    if (chart.optional) {
      const empty = !traces.length;
      box.style.display = empty ? "none" : "";
      if (empty) continue;
    }
    if (!box.clientWidth) continue;  // hidden: drawn when shown
    const layout = {
      // Explicit size: Plotly's autosize keeps a stale width when a view was hidden.
      width: box.clientWidth, height: box.clientHeight,
      title: { text: chart.title, font: { size: 13 } }, margin: { l: 45, r: 10, t: 32, b: 32 },
      xaxis: { title: { text: "step", font: { size: 11 } } },
      yaxis: chart.range ? { range: chart.range } : {},
      legend: { orientation: "h", y: -0.25, font: { size: 10 } }, showlegend: traces.length > 1,
      annotations: traces.length ? [] : [{ text: "no data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#999" } }],
    };
    Plotly.react(chart.id, traces, layout, { displayModeBar: false });
  }
}

function scheduleDraw() {
  if (!drawPending) { drawPending = true; setTimeout(drawCharts, 250); }
}

// ---------------------------------------------------------------- job view: samples -----
let sampleRows = [];

function splitThink(completion) {
  const i = completion.lastIndexOf("</think>");
  if (i < 0) return [null, completion];
  let head = completion.slice(0, i);
  const j = head.indexOf("<think>");
  if (j >= 0) head = head.slice(j + 7);
  return [head, completion.slice(i + 8)];
}

function renderSample(s) {
  let think = s.think, answer = s.answer;
  if (think === undefined && answer === undefined) [think, answer] = splitThink(s.completion || "");
  const verdicts = el("table", {}, el("tr", {}, el("th", {}, "verifier"), el("th", {}, "score"), el("th", {}, "passed"), el("th", {}, "reason")));
  for (const [name, v] of Object.entries(s.verdicts || {})) {
    verdicts.append(el("tr", {}, el("td", {}, name), el("td", {}, fmt(v.score, 2)),
      el("td", { class: v.passed ? "pass" : "fail" }, v.passed ? "yes" : "no"), el("td", {}, v.reason || "")));
  }
  return el("div", { class: `sample ${s.passed ? "passed" : "failed"}` },
    el("div", { class: "meta" }, el("span", {}, `step ${s.step}`), el("span", {}, `reward ${fmt(s.reward)}`),
       el("span", { class: s.passed ? "pass" : "fail" }, s.passed ? "correct" : "incorrect"),
       el("span", {}, `reference: ${typeof s.reference === "string" ? s.reference : JSON.stringify(s.reference)}`)),
    el("div", { class: "prompt" }, s.prompt || ""),
    el("div", { class: "label" }, "think"),
    el("pre", { class: "think" }, think === null ? "(no </think>: no reasoning block)" : think),
    el("div", { class: "label" }, "answer"),
    el("pre", { class: "answer" }, answer || ""),
    ...renderTurns(s.turns),
    verdicts);
}

// Tool use (docs/tools.md): the completion's turns, model text apart from tool code and output.
const TURN_LABELS = { model: "model", tool_call: "tool code", tool_output: "tool output" };
function renderTurns(turns) {
  if (!turns || !turns.some((t) => t.kind !== "model")) return [];
  return [el("div", { class: "label" }, "turns"),
    el("div", { class: "turns" }, ...turns.map((t) => el("div", { class: `turn turn-${t.kind}` },
      el("span", { class: "turn-label" }, t.tool ? `${TURN_LABELS[t.kind]} (${t.tool})` : TURN_LABELS[t.kind] || t.kind),
      el("pre", {}, t.text))))];
}

function renderSamples() {
  const select = $("#sample-step");
  const steps = [...new Set(sampleRows.map((r) => r.step))].sort((a, b) => b - a);
  const chosen = select.value === "" || select.value === "latest" ? steps[0] : Number(select.value);
  const keep = select.value;
  select.replaceChildren(el("option", { value: "latest" }, "latest step"), el("option", { value: "all" }, "all steps"),
    ...steps.map((s) => el("option", { value: s }, `step ${s}`)));
  select.value = keep || "latest";
  fillReasonFilter(sampleRows);  // compare.js: failed/passed and verifier-reason filters
  const rows = sampleRows.filter((r) => (select.value === "all" || r.step === chosen) && sampleMatches(r));
  const where = select.value === "all" ? "over all steps" : `at step ${chosen}`;
  $("#samples-note").textContent = rows.length ? `${rows.length} completions ${where}` : "none";
  $("#samples").replaceChildren(...rows.map(renderSample));
}

async function loadSamples(jobId) {
  try { sampleRows = (await api(`/v1/jobs/${encodeURIComponent(jobId)}/samples?limit=400`)).samples; }
  catch (e) { return; }
  renderSamples();
}

// ---------------------------------------------------------------- job view: the rest ----
let currentJob = null;

function renderHead(job) {
  currentJob = job;
  $("#job-title").textContent = job.id;
  $("#job-status").replaceWith(Object.assign(statusBadge(job.status), { id: "job-status" }));
  $("#job-step").textContent = `step ${job.step}/${job.max_steps} · ${job.spec.model.path} · ${job.spec.algorithm.estimator} · age ${age(job.age_s)}`;
  $("#cancel-button").hidden = TERMINAL.has(job.status);
  $("#resume-button").hidden = !(job.status === "failed" || job.status === "cancelled");
  $("#job-error").hidden = !job.error;
  $("#job-error").textContent = job.error || "";
}

async function refreshHead(jobId) {
  try { renderHead(await api(`/v1/jobs/${encodeURIComponent(jobId)}`)); } catch (e) { /* next tick */ }
}

async function loadCheckpoints(jobId) {
  try {
    const out = await api(`/v1/jobs/${encodeURIComponent(jobId)}/checkpoints`);
    $("#checkpoints").replaceChildren(...(out.checkpoints.length ? out.checkpoints.map((c) => el("li", {}, `step ${c.step}: ${c.path}`)) : [el("li", { class: "muted" }, "none yet")]));
  } catch (e) { /* ignore */ }
}

function gib(bytes) { return bytes === undefined ? "–" : `${(bytes / 2 ** 30).toFixed(1)} GiB`; }

async function loadPlan(jobId) {  // the placement plan made at submission (docs/gpu.md)
  let plan;
  try { plan = await api(`/v1/jobs/${encodeURIComponent(jobId)}/plan`); }
  catch (e) { $("#plan-summary").textContent = "(none)"; $("#plan-table").replaceChildren(); return; }
  $("#plan-summary").textContent =
    `${plan.mode}: ${plan.engine} engines, ${plan.num_learners} learner actor(s), weights by ${plan.sync}`;
  const head = el("tr", {}, ...["actor", "node", "GPUs", "GPU share", "memory per GPU"].map((h) => el("th", {}, h)));
  const rows = plan.actors.map((a) => el("tr", {}, el("td", {}, a.name), el("td", { class: "num" }, String(a.node)),
    el("td", {}, a.gpus.length ? a.gpus.join(", ") : "CPU"),
    el("td", { class: "num" }, a.gpus.length ? String(a.gpu_share) : "–"),
    el("td", { class: "num" }, gib(a.memory_bytes.total))));
  $("#plan-table").replaceChildren(head, ...rows);
  const notes = [...plan.notes, ...plan.problems.map((p) => `${p.loc.join(".")}: ${p.msg}`)];
  $("#plan-notes").replaceChildren(...notes.map((n) => el("li", {}, n)));
}

async function loadLogs(jobId) {
  try {
    const out = await api(`/v1/jobs/${encodeURIComponent(jobId)}/logs?tail=200`);
    const pre = $("#log-tail");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 5;
    pre.textContent = out.text || "(empty)";
    $("#log-source").textContent = out.source === "none" ? "" : `(${out.source})`;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  } catch (e) { /* ignore */ }
}

async function follow(jobId, after, signal) {
  let cursor = after;
  while (!signal.aborted) {
    try {
      await streamEvents(jobId, cursor, (kind, data, id) => {
        if (id) cursor = id;
        if (kind === "metrics") { addPoints(data.step, data.values); scheduleDraw(); }
        else if (kind === "truncate") {  // a resume dropped the steps after its checkpoint
          for (const s of series.values()) for (const k of [...s.keys()]) if (k > data.step) s.delete(k);
          scheduleDraw();
        } else if (kind === "samples") loadSamples(jobId);
        else if (kind === "checkpoint") loadCheckpoints(jobId);
        else if (kind === "status") refreshHead(jobId);
      }, signal);
    } catch (e) { if (signal.aborted) return; }
    if (currentJob && TERMINAL.has(currentJob.status)) {
      await refreshHead(jobId);
      if (TERMINAL.has(currentJob.status)) return;  // the stream ended with the job
    }
    await new Promise((r) => setTimeout(r, 1000));  // reconnect after the last event seen
  }
}

async function showJob(jobId) {
  series = new Map();
  sampleRows = [];
  $("#samples").replaceChildren();
  $("#log-tail").textContent = "";
  $("#sample-step").value = "latest";
  let job;
  try { job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`); }
  catch (e) { $("#job-title").textContent = e.status === 404 ? `no job ${jobId}` : e.message; return; }
  renderHead(job);
  const metrics = await api(`/v1/jobs/${encodeURIComponent(jobId)}/metrics`);
  for (const [name, s] of Object.entries(metrics.series)) {
    s.steps.forEach((step, i) => addPoints(step, { [name]: s.values[i] }));
  }
  drawCharts();
  loadSamples(jobId);
  loadPromptStats(jobId);  // compare.js
  loadCheckpoints(jobId);
  loadPlan(jobId);
  loadLogs(jobId);
  pageAbort = new AbortController();
  follow(jobId, job.last_event_id, pageAbort.signal);
  pageTimers.push(setInterval(() => {
    if (currentJob && !TERMINAL.has(currentJob.status)) { loadLogs(jobId); refreshHead(jobId); }
  }, 5000));
}

// ---------------------------------------------------------------- wiring ----------------
$("#submit-button").addEventListener("click", submitSpec);
$("#example-select").addEventListener("change", (e) => { $("#spec-text").value = examples[e.target.value]?.yaml || ""; });
$("#sample-step").addEventListener("change", renderSamples);
$("#token-button").addEventListener("click", () => askToken());
$("#cancel-button").addEventListener("click", () => currentJob && jobAction(currentJob.id, "cancel"));
$("#resume-button").addEventListener("click", () => currentJob && jobAction(currentJob.id, "resume"));
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { if (!$("#view-job").hidden) scheduleDraw(); });
route();
