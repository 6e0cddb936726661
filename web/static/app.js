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
  decisions.replaceChildren(...(recent.length ? recent : ["none yet"]).map((d) => element("li", "", d)));

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

function canvasContext(canvas) {
  // Draw at the device's pixel density, in CSS pixels.
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  return { context, width, height };
}

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim();
}

function axes(context, width, height, top) {
  // Horizontal grid lines at whole numbers, with the top value labelled.
  context.strokeStyle = color("line");
  context.fillStyle = color("muted");
  context.font = "11px system-ui, sans-serif";
  context.lineWidth = 1;
  const steps = Math.min(top, 4);
  for (let i = 0; i <= steps; i++) {
    const value = Math.round((top * i) / steps);
    const y = Math.round(plotY(value, top, height)) + 0.5;
    context.beginPath();
    context.moveTo(28, y);
    context.lineTo(width - 4, y);
    context.stroke();
    context.fillText(String(value), 4, y + 4);
  }
}

const PAD_TOP = 8;
const PAD_BOTTOM = 6;

function plotX(t, now, width) {
  return 28 + ((width - 32) * (t - (now - HISTORY_MS))) / HISTORY_MS;
}

function plotY(value, top, height) {
  return height - PAD_BOTTOM - ((height - PAD_TOP - PAD_BOTTOM) * value) / top;
}

function drawFleet(now) {
  const { context, width, height } = canvasContext($("fleet-chart"));
  const totals = samples.map((h) => FLEET_STATES.reduce((sum, s) => sum + (h.fleet[s] || 0), 0));
  const top = Math.max(2, ...totals);
  axes(context, width, height, top);
  // Stacked steps: each state's band sits on the ones before it.
  for (let band = FLEET_STATES.length - 1; band >= 0; band--) {
    context.fillStyle = color(FLEET_STATES[band]);
    context.beginPath();
    samples.forEach((h, i) => {
      const stacked = FLEET_STATES.slice(0, band + 1).reduce((sum, s) => sum + (h.fleet[s] || 0), 0);
      const x = plotX(h.t, now, width);
      const nextX = i + 1 < samples.length ? plotX(samples[i + 1].t, now, width) : x + 2;
      const y = plotY(stacked, top, height);
      if (i === 0) context.moveTo(x, plotY(0, top, height));
      context.lineTo(x, y);
      context.lineTo(nextX, y);
    });
    if (samples.length) {
      const last = samples[samples.length - 1];
      context.lineTo(plotX(last.t, now, width) + 2, plotY(0, top, height));
      context.closePath();
      context.fill();
    }
  }
}

function drawQueue(now) {
  const { context, width, height } = canvasContext($("queue-chart"));
  const values = samples.flatMap((h) => [Math.max(0, h.visible || 0), Math.max(0, h.inFlight || 0)]);
  const top = Math.max(4, ...values);
  axes(context, width, height, top);
  for (const [key, name] of [["visible", "visible"], ["inFlight", "in-flight"]]) {
    context.strokeStyle = color(name);
    context.lineWidth = 2;
    context.beginPath();
    samples.forEach((h, i) => {
      const x = plotX(h.t, now, width);
      const y = plotY(Math.max(0, h[key] || 0), top, height);
      if (i === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
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
