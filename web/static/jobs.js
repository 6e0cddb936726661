// A folder as one batch job: POST /jobs with every image of the folder, then follow its
// progress until the CSV is ready. Kept apart from app.js (uploads and the dashboard).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 1000;

  function headers() {
    const key = $("api-key") ? $("api-key").value.trim() : "";
    return key ? { Accept: "application/json", "X-Api-Key": key } : { Accept: "application/json" };
  }

  function say(text, failed = false) {
    $("job-status").textContent = text;
    $("job-status").classList.toggle("error", failed);
  }

  async function submit(files) {
    const images = [...files].filter((file) => file.type.startsWith("image/") || !file.type);
    if (!images.length) {
      $("job").hidden = false;
      say("No images in that folder.", true);
      return;
    }
    const form = new FormData();
    for (const file of images) form.append("files", file, file.webkitRelativePath || file.name);
    $("job").hidden = false;
    $("job-csv").hidden = true;
    $("job-progress").value = 0;
    say(`Sending ${images.length} images\u2026`);
    try {
      const response = await fetch("/jobs", { method: "POST", body: form, headers: headers() });
      const answer = await response.json().catch(() => ({}));
      if (response.status !== 202) {
        say(`${response.status}: ${answer.reason || answer.error || response.statusText}`, true);
        return;
      }
      follow(answer.id);
    } catch (error) {
      say(`upload failed: ${error.message}`, true);
    }
  }

  async function follow(id) {
    let job;
    try {
      const response = await fetch(`/jobs/${id}`, { headers: headers() });
      job = await response.json();
      if (!response.ok) throw new Error(job.reason || response.statusText);
    } catch (error) {
      say(`progress unavailable: ${error.message}; retrying`, true);
      setTimeout(() => follow(id), POLL_MS * 3);
      return;
    }
    const finished = job.done + job.failed;
    $("job-progress").max = job.total;
    $("job-progress").value = finished;
    const rate = job.rate_per_s ? `, ${job.rate_per_s.toFixed(1)}/s` : "";
    const eta = job.eta_s ? `, about ${Math.ceil(job.eta_s)} s left` : "";
    say(`${finished} of ${job.total} classified (${job.failed} failed${rate}${eta})`);
    if (job.state === "done") {
      say(`Done: ${job.done} classified, ${job.failed} failed.`);
      offerCsv(id);
    } else {
      setTimeout(() => follow(id), POLL_MS);
    }
  }

  async function offerCsv(id) {
    // Fetched rather than linked, so that an API key travels with the request.
    const response = await fetch(`/jobs/${id}/results.csv`, { headers: headers() });
    if (!response.ok) return;
    const link = $("job-csv");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `${id}.csv`;
    link.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const input = $("folder");
    input.addEventListener("change", () => {
      submit(input.files);
      input.value = "";
    });
    $("job-form").addEventListener("submit", (event) => event.preventDefault());
  });
})();
