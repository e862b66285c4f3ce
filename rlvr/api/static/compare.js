// rlvr dashboard: the compare view (chosen jobs' curves overlaid, eval results side by
// side), the evals table (eval-only jobs with their progress), the samples filters and the
// per-prompt pass rates of a job. Uses api(), el(), fmt(), $() and statusBadge() of app.js.
"use strict";

const MAX_COMPARE = 8;  // the API's cap on jobs per comparison
const COMPARE_METRICS = ["eval/accuracy", "reward/mean", "accuracy", "response/length_mean", "kl", "entropy"];

// ---------------------------------------------------------------- evals table -----------
function evalColumns(evals) {
  const names = new Set();
  for (const e of evals) for (const r of e.results) {
    for (const k of Object.keys(r.metrics)) if (/^eval\/(.+\/(pass|maj)@\d+|accuracy)$/.test(k)) names.add(k);
  }
  return [...names].sort((a, b) => (a === "eval/accuracy" ? -1 : b === "eval/accuracy" ? 1 : a.localeCompare(b)));
}

function renderEvals(table, evals) {
  const cols = evalColumns(evals);
  const head = el("tr", {}, ...["eval", "status", "model", "step", ...cols.map((c) => c.replace(/^eval\//, ""))].map((h) => el("th", {}, h)));
  const rows = [];
  for (const e of evals) {
    const status = el("td", {}, statusBadge(e.status));
    if (e.status === "running" || e.status === "queued") {
      status.append(el("progress", { max: "1", value: String(e.progress), title: e.message }), el("div", { class: "muted small" }, e.message));
    } else if (e.error) status.append(el("div", { class: "fail small" }, e.error.slice(0, 160)));
    const results = e.results.length ? e.results : [{ model: e.targets.map((t) => t.label).join(", "), step: null, metrics: {} }];
    results.forEach((r, i) => rows.push(el("tr", { class: "eval-row", "data-eval": e.id },
      el("td", {}, i ? "" : e.id), i ? el("td") : status, el("td", {}, r.model), el("td", { class: "num" }, r.step ?? "–"),
      ...cols.map((c) => el("td", { class: "num" }, fmt(r.metrics[c], 3))))));
  }
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  return evals.length;
}

async function loadEvals(tableSel, emptySel) {
  let out;
  try { out = await api("/v1/evals?limit=50"); } catch (e) { return; }
  const n = renderEvals($(tableSel), out.evals);
  if (emptySel) $(emptySel).hidden = n > 0;
}

// ---------------------------------------------------------------- compare view ----------
let compareJobs = [];  // ids chosen, in the order they were ticked

async function showCompare() {
  const fromHash = new URLSearchParams(location.hash.split("?")[1] || "").get("jobs");
  if (fromHash) compareJobs = fromHash.split(",").filter(Boolean).slice(0, MAX_COMPARE);
  const box = $("#compare-jobs");
  let jobs = [];
  try { jobs = (await api("/v1/jobs?limit=100")).jobs; } catch (e) { return; }
  box.replaceChildren(...jobs.map((j) => el("label", { class: "compare-job" },
    el("input", { type: "checkbox", value: j.id, ...(compareJobs.includes(j.id) ? { checked: "" } : {}),
                  onchange: (ev) => toggleCompare(j.id, ev.target.checked) }),
    ` ${j.id} `, statusBadge(j.status))));
  $("#compare-metrics").replaceChildren(...COMPARE_METRICS.map((m) => el("option", { value: m })));
  drawCompare();
  loadEvals("#compare-evals");
  pageTimers.push(setInterval(() => loadEvals("#compare-evals"), 3000));
}

function toggleCompare(id, on) {
  compareJobs = compareJobs.filter((x) => x !== id);
  if (on) compareJobs.push(id);
  if (compareJobs.length > MAX_COMPARE) {
    alert(`at most ${MAX_COMPARE} runs at once`);
    compareJobs = compareJobs.slice(0, MAX_COMPARE);
    showCompare();
    return;
  }
  drawCompare();
}

function compareQuery(format) {
  const q = new URLSearchParams({ jobs: compareJobs.join(","), metrics: $("#compare-metric").value.trim() || "eval/accuracy" });
  if (format) q.set("format", format);
  return `/v1/compare?${q}`;
}

async function drawCompare() {
  const metric = $("#compare-metric").value.trim() || "eval/accuracy";
  const byWall = $("#compare-x").value === "wall";
  $("#compare-note").textContent = compareJobs.length ? "" : "tick runs to compare";
  const traces = [];
  if (compareJobs.length) {
    let data;
    try { data = await api(compareQuery()); }
    catch (e) { $("#compare-note").textContent = e.body?.detail ? JSON.stringify(e.body.detail) : e.message; return; }
    compareJobs.forEach((id, i) => {
      const s = data.jobs[id]?.series[metric];
      if (!s) return;
      traces.push({ x: byWall ? s.wall_s.map((t) => t / 60) : s.steps, y: s.values, name: `${id}`, mode: s.steps.length < 40 ? "lines+markers" : "lines",
                    line: { color: COLORS[i % COLORS.length], width: 2 }, marker: { size: 5 } });
    });
  }
  const box = $("#compare-chart");
  Plotly.react(box, traces, {
    width: box.clientWidth, height: box.clientHeight, title: { text: metric, font: { size: 14 } },
    margin: { l: 50, r: 10, t: 36, b: 40 }, xaxis: { title: { text: byWall ? "training time (min)" : "step" } },
    legend: { orientation: "h", y: -0.2 }, showlegend: true,
    annotations: traces.length ? [] : [{ text: "no data", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#999" } }],
  }, { displayModeBar: false });
}

async function exportCompare(format) {
  if (!compareJobs.length) return;
  const res = await fetch(compareQuery(format), { headers: authHeaders() });
  const blob = format === "csv" ? await res.blob() : new Blob([JSON.stringify(await res.json(), null, 1)], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `compare.${format}` });
  document.body.append(a);
  a.click();
  a.remove();
}

// ---------------------------------------------------------------- job view: failures ----
function sampleReasons(row) {
  return Object.entries(row.verdicts || {}).map(([name, v]) => `${name}: ${v.reason || "?"}`);
}

function sampleMatches(row) {
  const outcome = $("#sample-outcome").value;
  const reason = $("#sample-reason").value;
  if (outcome === "failed" && row.passed) return false;
  if (outcome === "passed" && !row.passed) return false;
  return !reason || sampleReasons(row).includes(reason);
}

function fillReasonFilter(rows) {
  const select = $("#sample-reason");
  const keep = select.value;
  const reasons = [...new Set(rows.flatMap(sampleReasons))].sort();
  select.replaceChildren(el("option", { value: "" }, "any reason"), ...reasons.map((r) => el("option", { value: r }, r)));
  select.value = reasons.includes(keep) ? keep : "";
}

async function loadPromptStats(jobId) {
  let out;
  try { out = await api(`/v1/jobs/${encodeURIComponent(jobId)}/prompts?limit=15`); } catch (e) { return; }
  $("#prompt-stats-note").textContent = out.total ? `${out.total} prompts in ${out.samples} samples` : "no samples yet";
  $("#prompt-stats").replaceChildren(
    el("thead", {}, el("tr", {}, ...["prompt", "failing for (steps)", "pass rate", "samples", "last passed"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...out.prompts.map((p) => el("tr", { class: "prompt-row" },
      el("td", {}, el("span", { class: "muted" }, `${p.id} `), p.prompt.slice(0, 120)),
      el("td", { class: `num ${p.failing_for ? "fail" : "pass"}` }, String(p.failing_for)),
      el("td", { class: "num" }, fmt(p.pass_rate, 2)), el("td", { class: "num" }, String(p.samples)),
      el("td", { class: "num" }, p.last_passed_step ?? "never")))));
}

document.addEventListener("DOMContentLoaded", () => {  // after app.js has defined $()
  $("#compare-metric").addEventListener("change", drawCompare);
  $("#compare-x").addEventListener("change", drawCompare);
  $("#compare-csv").addEventListener("click", () => exportCompare("csv"));
  $("#compare-json").addEventListener("click", () => exportCompare("json"));
  $("#sample-outcome").addEventListener("change", () => renderSamples());
  $("#sample-reason").addEventListener("change", () => renderSamples());
});
