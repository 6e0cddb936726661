// Uploads from the page: one card per file with its label, top 5, and where the answer came from.

const UPLOADS_AT_ONCE = 4;

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(score) {
  return `${(score * 100).toFixed(1)}%`;
}

export function seconds(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function resultCard(file) {
  const card = element("li", "card");
  // A preview only for what the browser can show: a file it cannot decode gets none.
  const image = element("img");
  image.alt = "";
  image.src = URL.createObjectURL(file);
  image.addEventListener("load", () => URL.revokeObjectURL(image.src), { once: true });
  image.addEventListener("error", () => dropPreview(card), { once: true });
  const body = element("div");
  body.append(element("h3", "", file.name), element("p", "label", "classifying\u2026"));
  card.append(image, body);
  return card;
}

function dropPreview(card) {
  const image = card.querySelector("img");
  if (image) {
    URL.revokeObjectURL(image.src);
    image.remove();
  }
  card.classList.add("no-preview");
}

function facts(answer, elapsedMs) {
  const timings = answer.timings_ms || {};
  const line = element("p", "facts");
  const parts = [seconds(elapsedMs)];
  if (answer.cached) parts.push("from the cache");
  else if (timings.worker_start) parts.push("included a worker start");
  if (answer.instance) parts.push(`worker ${answer.instance}`);
  if (answer.model) parts.push(answer.version ? `${answer.model} ${answer.version}` : answer.model);
  line.append(parts.join(" \u00b7 "));
  if (answer.id) {
    const link = element("a", "", "result JSON");
    link.href = `/results/${encodeURIComponent(answer.id)}`;
    line.append(" \u00b7 ", link);
  }
  return line;
}

function showResult(card, answer, elapsedMs) {
  const label = card.querySelector(".label");
  label.textContent = answer.label;
  const list = element("ol", "top5");
  list.setAttribute("aria-label", "top 5 labels");
  for (const { label: name, score } of answer.top5 || []) {
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
  label.after(facts(answer, elapsedMs), list);
  card.dataset.state = "done";
}

function showError(card, message) {
  const label = card.querySelector(".label");
  label.textContent = message;
  label.classList.add("error");
  card.dataset.state = "error";
}

// JSON, with the API key when one is entered (uploads, results, /status and its history need it
// when the service sets one).
export function jsonHeaders() {
  const headers = { Accept: "application/json" };
  const key = document.getElementById("api-key").value.trim();
  if (key) headers["X-Api-Key"] = key;
  return headers;
}

async function classify(file, card) {
  const form = new FormData();
  form.append("myfile", file, file.name);
  const headers = jsonHeaders();
  const started = performance.now();
  try {
    const response = await fetch("/upload", { method: "POST", body: form, headers });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      showResult(card, answer, performance.now() - started);
      return;
    }
    if (response.status >= 400 && response.status < 500 && response.status !== 401) dropPreview(card);
    if (response.status === 401) {
      showError(card, "This service needs an API key: enter it under \u201cAPI key\u201d.");
    } else {
      showError(card, `${response.status}: ${answer.reason || answer.error || response.statusText}`);
    }
  } catch (error) {
    showError(card, `upload failed: ${error.message}`);
  }
}

// Every chosen file goes to the server, which says why it refuses one (not an image, too big).
async function classifyAll(files) {
  const queue = [...files].map((file) => {
    const card = resultCard(file);
    document.getElementById("results").prepend(card);
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

// While no worker is ready, waiting cards say why they wait.
export function explainWaiting(fleet) {
  const ready = (fleet.running || 0) - (fleet.starting || 0);
  const text = ready > 0
    ? "classifying\u2026"
    : (fleet.starting || fleet.pending)
      ? "classifying\u2026 a worker is starting (its model loads in a few seconds)"
      : "classifying\u2026 waiting for the scaler to start a worker";
  for (const label of document.querySelectorAll(".card:not([data-state]) .label")) label.textContent = text;
}

export function setUpUploads() {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("files");
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
