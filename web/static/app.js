// The page's behaviour: upload images and show their labels; poll /status and draw it.
// No libraries: the page must work offline and under a strict content security policy.
"use strict";

const POLL_MS = 1500; // the dashboard refreshes at least every 2 s
const HISTORY_MS = 5 * 60 * 1000;
const UPLOADS_AT_ONCE = 4;
const FLEET_STATES = ["running", "pending", "stopping", "stopped"];

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- uploads ---------------------------------------------------------------------------------

function resultCard(file) {
  const card = element("li", "card");
  const image = element("img");
  image.alt = "";
  image.src = URL.createObjectURL(file);
  image.addEventListener("load", () => URL.revokeObjectURL(image.src), { once: true });
  const body = element("div");
  body.append(element("h3", "", file.name), element("p", "label", "classifying\u2026"));
  card.append(image, body);
  return card;
}

function showResult(card, answer) {
  const label = card.querySelector(".label");
  label.textContent = answer.label;
  const list = element("ol", "top5");
  list.setAttribute("aria-label", "top 5 labels");
  for (const { label: name, score } of answer.top5) {
    const row = element("li");
    const bar = element("span", "bar");
    const fill = element("span");
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    bar.setAttribute("aria-hidden", "true");
    row.append(element("span", "name", name), bar, element("span", "score", percent(score)));
    row.title = `${name}: ${percent(score)}`;
    list.append(row);
  }
  label.after(list);
  card.dataset.state = "done";
}

function showError(card, message) {
  const label = card.querySelector(".label");
  label.textContent = message;
  label.classList.add("error");
  card.dataset.state = "error";
}

function percent(score) {
  return `${(score * 100).toFixed(1)}%`;
}

async function classify(file, card) {
  const form = new FormData();
  form.append("myfile", file, file.name);
  const headers = { Accept: "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers["X-Api-Key"] = key;
  try {
    const response = await fetch("/upload", { method: "POST", body: form, headers });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      showResult(card, answer);
    } else if (response.status === 401) {
      showError(card, "This service needs an API key: enter it under \u201cAPI key\u201d.");
    } else {
      showError(card, `${response.status}: ${answer.reason || answer.error || response.statusText}`);
    }
  } catch (error) {
    showError(card, `upload failed: ${error.message}`);
  }
}

async function classifyAll(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/") || !file.type);
  const queue = images.map((file) => {
    const card = resultCard(file);
    $("results").prepend(card);
    return [file, card];
  });
  const lane = async () => {
    while (queue.length) {
      const [file, card] = queue.shift();
      await classify(file, card);
    }
  };
  await Promise.all(Array.from({ length: UPLOADS_AT_ONCE }, lane));
}

function setUpUploads() {
  const form = $("upload-form");
  const input = $("files");
  input.addEventListener("change", () => {
    classifyAll(input.files);
    input.value = ""; // the same file may be chosen again
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  for (const type of ["dragenter", "dragover"]) {
    form.addEventListener(type, (event) => {
      event.preventDefault();
      form.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    form.addEventListener(type, () => form.classList.remove("over"));
  }
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    classifyAll(event.dataTransfer.files);
  });
}

// ---- dashboard -------------------------------------------------------------------------------

const samples = []; // {t, fleet: {...}, visible, inFlight}

function count(value) {
  return typeof value === "number" && value >= 0 ? String(value) : "\u2013";
}

function millis(value) {
  if (typeof value !== "number") return "\u2013";
  return value >= 1000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
}

function render(status) {
  const queue = status.queue || {};
  const fleet = status.fleet || {};
  $("queue-visible").textContent = count(queue.visible);
  $("queue-in-flight").textContent = count(queue.in_flight);
  $("queue-dlq").textContent = count(queue.dlq);
  $("fleet-running").textContent = count(fleet.running);
  $("fleet-pending").textContent = count(fleet.pending);
  $("fleet-idle").textContent = `${count(fleet.stopping)} / ${count(fleet.stopped)}`;
  const rps = status.throughput_rps;
  $("throughput").textContent = typeof rps === "number" ? `${rps.toFixed(1)}/s` : "\u2013";
  const latency = status.latency_ms || {};
  $("latency-p50").textContent = millis(latency.p50);
  $("latency-p95").textContent = millis(latency.p95);
  $("policy").textContent = status.scaler === "ok" ? `policy ${status.policy}` : "scaler not reachable";
  const decisions = $("decisions");
  const recent = (status.decisions || []).slice(-10).reverse();
  // Decisions are records (docs/scaling.md); their log line until they are worded as sentences.
  const lines = recent.map((d) => (typeof d === "string" ? d : `${d.time} ${d.text}`));
  decisions.replaceChildren(...(lines.length ? lines : ["none yet"]).map((d) => element("li", "", d)));

  const now = Date.now();
  samples.push({ t: now, fleet, visible: queue.visible, inFlight: queue.in_flight });
  while (samples.length && samples[0].t < now - HISTORY_MS) samples.shift();
  drawFleet(now);
  drawQueue(now);
  $("fleet-chart").setAttribute(
    "aria-label",
    `Fleet now: ${FLEET_STATES.map((s) => `${fleet[s] || 0} ${s}`).join(", ")}`,
  );
  $("queue-chart").setAttribute(
    "aria-label",
    `Queue now: ${count(queue.visible)} queued, ${count(queue.in_flight)} in flight`,
  );
}

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim();
}

function niceStep(top) {
  // A tick step of 1, 2 or 5 times a power of ten that gives at most four intervals.
  for (let power = 1; ; power *= 10) {
    for (const step of [1, 2, 5]) {
      if (top / (step * power) <= 4) return step * power;
    }
  }
}

function frame(canvas, maxValue, now) {
  // A cleared canvas at the device's pixel density, its axes, and value -> pixel mappings.
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  const left = 30;
  const right = width - 6;
  const top = 8;
  const bottom = height - 18;
  const step = niceStep(Math.max(1, maxValue));
  const highest = step * Math.max(1, Math.ceil(maxValue / step));
  // The chart fills from the first sample; after five minutes it scrolls.
  const start = Math.min(now - 10_000, samples.length ? samples[0].t : now);
  const x = (t) => left + ((right - left) * (t - start)) / (now - start);
  const y = (value) => bottom - ((bottom - top) * Math.max(0, value || 0)) / highest;

  context.font = "11px system-ui, sans-serif";
  context.lineWidth = 1;
  context.strokeStyle = color("line");
  context.fillStyle = color("muted");
  for (let value = 0; value <= highest; value += step) {
    const row = Math.round(y(value)) + 0.5;
    context.beginPath();
    context.moveTo(left, row);
    context.lineTo(right, row);
    context.stroke();
    context.textAlign = "right";
    context.fillText(String(value), left - 6, row + 4);
  }
  context.textAlign = "left";
  const ago = Math.round((now - start) / 1000);
  context.fillText(ago >= 60 ? `${(ago / 60).toFixed(1)} min ago` : `${ago} s ago`, left, height - 4);
  context.textAlign = "right";
  context.fillText("now", right, height - 4);
  return { context, x, y, right };
}

function drawFleet(now) {
  const totals = samples.map((h) => FLEET_STATES.reduce((sum, s) => sum + (h.fleet[s] || 0), 0));
  const { context, x, y, right } = frame($("fleet-chart"), Math.max(2, ...totals), now);
  // Stacked steps: each state's band sits on the ones before it, drawn back to front.
  for (let band = FLEET_STATES.length - 1; band >= 0 && samples.length; band--) {
    const below = FLEET_STATES.slice(0, band + 1);
    context.fillStyle = color(FLEET_STATES[band]);
    context.beginPath();
    context.moveTo(x(samples[0].t), y(0));
    samples.forEach((h, i) => {
      const level = y(below.reduce((sum, s) => sum + (h.fleet[s] || 0), 0));
      context.lineTo(x(h.t), level);
      context.lineTo(i + 1 < samples.length ? x(samples[i + 1].t) : right, level);
    });
    context.lineTo(right, y(0));
    context.closePath();
    context.fill();
  }
}

function drawQueue(now) {
  const values = samples.flatMap((h) => [h.visible || 0, h.inFlight || 0]);
  const { context, x, y } = frame($("queue-chart"), Math.max(4, ...values), now);
  for (const [key, name] of [["inFlight", "in-flight"], ["visible", "visible"]]) {
    context.strokeStyle = color(name);
    context.lineWidth = 2;
    context.beginPath();
    samples.forEach((h, i) => (i ? context.lineTo(x(h.t), y(h[key])) : context.moveTo(x(h.t), y(h[key]))));
    context.stroke();
  }
}

let polling = false;

async function poll() {
  if (polling) return; // a slow answer: skip this beat rather than pile up requests
  polling = true;
  const connection = $("connection");
  try {
    const response = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
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

document.addEventListener("DOMContentLoaded", () => {
  setUpUploads();
  poll();
  setInterval(poll, POLL_MS);
});
