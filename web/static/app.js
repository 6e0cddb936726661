// The page: uploads, and a dashboard of /status drawn over the history the web tier keeps.
// No libraries: the page must work offline and under a strict content security policy.
import { drawFleet, drawQueue, fleetLevels, instanceSeconds } from "./charts.js";
import { collapse, identity, normalise, sentence } from "./decisions.js";
import { element, explainWaiting, jsonHeaders, seconds, setUpUploads } from "./uploads.js";

const POLL_MS = 1500; // the dashboard refreshes at least every 2 s
const SHOWN_DECISIONS = 8;

const $ = (id) => document.getElementById(id);
const history = { windowS: 600, samples: [], decisions: new Map() };

function count(value) {
  return typeof value === "number" && value >= 0 ? String(value) : "\u2013";
}

function addSample(sample) {
  const last = history.samples[history.samples.length - 1];
  if (last && sample.t <= last.t) return;
  history.samples.push(sample);
  const cutoff = sample.t - history.windowS;
  while (history.samples.length && history.samples[0].t < cutoff) history.samples.shift();
}

function addDecisions(decisions, limits) {
  for (const decision of decisions || []) {
    const key = identity(decision);
    if (!history.decisions.has(key)) history.decisions.set(key, normalise(decision, limits));
  }
}

async function loadHistory() {
  try {
    const response = await fetch("/status/history", { cache: "no-store", headers: jsonHeaders() });
    if (!response.ok) return;
    const doc = await response.json();
    history.windowS = doc.window_s || history.windowS;
    for (const sample of doc.samples || []) addSample(sample);
    addDecisions(doc.decisions, doc.limits);
  } catch {
    // No history (an older web tier): the charts start from now.
  }
}

function renderTiles(status) {
  const queue = status.queue || {};
  const fleet = status.fleet || {};
  const levels = fleetLevels(fleet);
  $("queue-visible").textContent = count(queue.visible);
  $("queue-in-flight").textContent = count(queue.in_flight);
  $("queue-dlq").textContent = count(queue.dlq);
  $("fleet-running").textContent = count(levels.ready);
  $("fleet-starting").textContent = count(levels.starting);
  $("fleet-pending").textContent = count(levels.pending);
  $("fleet-stopped").textContent = count(fleet.stopped);
  $("fleet-stopping").textContent = fleet.stopping ? `+${fleet.stopping} stopping` : "cost nothing";
  const span = status.window_s ? `last ${status.window_s} s` : "recent";
  for (const id of ["window-throughput", "window-p50", "window-p95"]) $(id).textContent = span;
  const rps = status.throughput_rps;
  $("throughput").textContent = typeof rps === "number" ? `${rps.toFixed(1)}/s` : "\u2013";
  const latency = status.latency_ms || {};
  $("latency-p50").textContent = typeof latency.p50 === "number" ? seconds(latency.p50) : "\u2013";
  $("latency-p95").textContent = typeof latency.p95 === "number" ? seconds(latency.p95) : "\u2013";
  $("policy").textContent = status.scaler === "ok" ? status.policy : "unreachable";
  renderCost(status.cost || {});
  renderEstimates(status.estimates || {});
  if (status.model) $("about-model").textContent = `${status.model} (${status.labels || "ImageNet"})`;
}

// Dollars: small sums keep their first significant digits ($0.00042, not $0.00).
function dollars(value) {
  if (typeof value !== "number") return "\u2013";
  if (value === 0) return "$0";
  const digits = Math.max(2, Math.min(8, 1 - Math.floor(Math.log10(Math.abs(value)))));
  return `$${value.toFixed(digits)}`;
}

function renderCost(cost) {
  const parts = ["compute", "requests", "fixed"].map((k) => cost[k]);
  const known = parts.every((v) => typeof v === "number");
  $("cost-total").textContent = known ? dollars(parts.reduce((a, b) => a + b, 0)) : "\u2013";
  $("cost-parts").textContent = known
    ? `compute ${dollars(parts[0])} · requests ${dollars(parts[1])} · hosts ${dollars(parts[2])}`
    : "compute, requests, hosts";
  $("cost-per-1000").textContent = dollars(cost.per_1000_images);
  $("cost-images").textContent =
    typeof cost.images === "number" ? `${cost.images.toLocaleString()} answered, hosts apart` : "compute and requests";
}

// Where each input the scaler plans with comes from: said beside its value, never left to guess.
// A boot estimate's samples are boots (its median's); a throughput's, the workers it is from.
const MEASURED = {
  boots: (n) => (n > 1 ? `measured, median of ${n}` : n === 1 ? "measured once" : "measured now"),
  workers: (n) => (n > 0 ? `measured now, ${n} worker${n > 1 ? "s" : ""}` : "measured now"),
};
const SOURCES = {
  measured: (e, samples) => MEASURED[samples](e.samples),
  remembered: () => "remembered: last measured",
  default: () => "default, until measured",
};

function renderEstimate(id, estimate, unit, fallback, samples = "boots") {
  const known = estimate && typeof estimate.value === "number";
  $(id).textContent = known ? `${estimate.value.toFixed(1)} ${unit}` : "\u2013";
  const source = known && SOURCES[estimate.source];
  $(`${id}-source`).textContent = source ? source(estimate, samples) : fallback;
  $(id).dataset.source = known ? estimate.source : "";
}

function renderEstimates(estimates) {
  renderEstimate("estimate-boot-new", estimates.boot_new_s, "s", "a new instance to ready");
  renderEstimate("estimate-boot-start", estimates.boot_start_s, "s", "a stopped one to ready");
  renderEstimate("estimate-throughput", estimates.throughput_img_s, "img/s", "images a second", "workers");
  $("estimate-type").textContent = estimates.instance_type || "\u2013";
}

let shownDecisions = "";

function renderDecisions() {
  const records = [...history.decisions.values()];
  const entries = collapse(records).slice(0, SHOWN_DECISIONS);
  // Redraw only when the list changed, and keep open disclosures open: a reader may be in one.
  const shown = entries.map((e) => `${identity(e.record)}#${e.count}`).join("\n");
  if (shown === shownDecisions) return;
  shownDecisions = shown;
  const open = new Set([...$("decisions").querySelectorAll("details[open]")].map((d) => d.dataset.key));
  const items = entries.map(({ record, first, count: repeats }) => {
    const item = element("li", record.acted ? "acted" : "");
    const when = repeats > 1 ? `${first.time}\u2013${record.time}` : record.time || "";
    item.append(element("time", "", when));
    const words = element("span", "sentence", sentence(record));
    if (repeats > 1) words.append(element("small", "", ` (${repeats} ticks)`));
    item.append(words);
    const raw = element("details");
    raw.dataset.key = `${first.time}|${first.line || ""}`;
    raw.open = open.has(raw.dataset.key);
    raw.append(element("summary", "", "inputs"), element("code", "", record.line || JSON.stringify(record)));
    item.append(raw);
    return item;
  });
  $("decisions").replaceChildren(...(items.length ? items : [element("li", "", "none yet")]));
}

function renderCharts(now) {
  const samples = history.samples;
  const start = Math.min(now - 60, samples.length ? samples[0].t : now);
  const acted = [...history.decisions.values()].filter((d) => d.acted);
  drawFleet($("fleet-chart"), samples, acted, start, now);
  drawQueue($("queue-chart"), samples, start, now);
  const minutes = Math.round((now - start) / 60);
  for (const id of ["fleet-span", "queue-span"]) $(id).textContent = minutes > 1 ? `last ${minutes} min` : "last minute";
  $("instance-seconds").textContent = Math.round(instanceSeconds(samples, now)).toLocaleString();
  $("window-instance-seconds").textContent = minutes > 1 ? `last ${minutes} min` : "last minute";
  const fleet = samples.length ? samples[samples.length - 1].fleet : {};
  const levels = fleetLevels(fleet);
  $("fleet-chart").setAttribute(
    "aria-label",
    `Fleet now: ${levels.ready} running, ${levels.starting} starting, ${levels.pending} pending, ` +
      `${levels.stopping} stopping, ${fleet.stopped || 0} stopped`,
  );
  const last = samples[samples.length - 1] || {};
  $("queue-chart").setAttribute("aria-label", `Queue now: ${count(last.visible)} waiting, ${count(last.in_flight)} in flight`);
}

let shownWorkers = "";

// One line a running worker: its instance and the model versions it serves (the default first).
function renderWorkers(workers) {
  const lines = (workers || []).map((worker) => {
    const models = (worker.models || []).map((m) => `${m.name} ${m.version}`).join(", ");
    return `${worker.id}: ${models || "loading the model"}`;
  });
  const shown = lines.join("\n");
  if (shown === shownWorkers) return; // redraw only on a change
  shownWorkers = shown;
  const items = lines.length ? lines : ["none running"];
  $("workers").replaceChildren(...items.map((line) => element("li", "", line)));
}

function render(status) {
  const now = typeof status.time === "number" ? status.time : Date.now() / 1000;
  const queue = status.queue || {};
  addSample({ t: now, visible: queue.visible, in_flight: queue.in_flight, fleet: status.fleet || {} });
  addDecisions(status.decisions, status.limits);
  renderTiles(status);
  renderWorkers(status.workers);
  renderDecisions();
  renderCharts(now);
  explainWaiting(status.fleet || {});
}

let polling = false;

async function poll() {
  if (polling) return; // a slow answer: skip this beat rather than pile up requests
  polling = true;
  const connection = $("connection");
  try {
    const response = await fetch("/status", { cache: "no-store", headers: jsonHeaders() });
    if (!response.ok) throw new Error(`status ${response.status}`);
    render(await response.json());
    connection.textContent = "live";
    connection.classList.remove("offline");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    connection.textContent = `offline (${error.message})`;
    connection.classList.add("offline");
  } finally {
    polling = false;
  }
}

setUpUploads();
loadHistory().then(() => {
  poll();
  setInterval(poll, POLL_MS);
});
window.addEventListener("resize", () => history.samples.length && renderCharts(history.samples[history.samples.length - 1].t));
