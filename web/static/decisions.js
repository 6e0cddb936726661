// Scaler decisions in words. /status serves records ({at, inputs, actions, ok, code, text, ...}),
// from the scaler of the same image as this page.

const LIST_FIELDS = ["start", "stop", "terminate"];

// Records come flat ({visible, capacity, launch, ...}) or nested ({inputs: {...}, actions:
// {...}, ok, code, text}); both are read into the flat fields the sentences use.
function flatten(record) {
  for (const part of ["inputs", "actions"]) {
    if (record[part] && typeof record[part] === "object") {
      for (const [key, value] of Object.entries(record[part])) if (!(key in record)) record[key] = value;
    }
  }
  record.line = record.line || record.text || "";
  if (record.ok === false && !record.error) record.error = (record.code || "").replace(/-error$/, "") || "failed";
  return record;
}

export function normalise(decision, limits = {}) {
  const record = flatten({ ...decision });
  if (record.max === undefined && typeof limits.max === "number") record.max = limits.max;
  for (const key of LIST_FIELDS) if (!Array.isArray(record[key])) record[key] = [];
  record.launch = Number(record.launch) || 0;
  record.spares = Number(record.spares) || 0;
  record.acted = Boolean(
    record.start.length || record.launch || record.stop.length || record.terminate.length || record.spares,
  );
  return record;
}

function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}

function load(d) {
  const waiting = d.visible > 0 ? `${d.visible} waiting` : "nothing waiting";
  return d.in_flight > 0 ? `${waiting}, ${d.in_flight} in flight` : waiting;
}

function capped(d) {
  return d.raw > d.desired && d.desired === d.max ? `; the load asks for ${d.raw}, capped at the maximum ${d.max}` : "";
}

function atMost(d) {
  return d.desired === d.max && !(d.raw > d.desired) ? " (the maximum)" : "";
}

// One sentence a person can read: what changed, and why.
export function sentence(d) {
  if (d.error) return `No decision (${d.error === "failed" ? "AWS failed" : `${d.error} failed`}): the fleet stays as it is.`;
  const before = d.capacity;
  const how = [];
  if (d.start.length) how.push(`${plural(d.start.length, "instance")} restarted from the warm pool`);
  if (d.launch) how.push(`${d.launch} launched`);
  if (d.desired > before) {
    return `Scaled out ${before} \u2192 ${d.desired}${atMost(d)}: ${load(d)}${how.length ? ` (${how.join(", ")})` : ""}${capped(d)}.`;
  }
  if (d.desired < before) {
    // The policy's own last clause says why (e.g. "scale in to quiet-period peak 1").
    const rule = d.reason ? ` (${d.reason.split(": ").pop()})` : "";
    return `Scaled in ${before} \u2192 ${d.desired}: ${load(d)}${rule}.`;
  }
  // At a steady count the planner fills the warm pool: spares launched, and stopped once ready.
  if (d.spares) {
    return `Launched ${plural(d.spares, "spare")} for the warm pool (a surge then restarts instead of launching); ${plural(d.desired, "worker")} kept.`;
  }
  if (d.stop.length) {
    return `Stopped ${plural(d.stop.length, "spare")} into the warm pool, ready to restart; ${plural(d.desired, "worker")} kept.`;
  }
  if (d.terminate.length) {
    return `Terminated ${plural(d.terminate.length, "stopped instance")} beyond the warm pool or too old; ${plural(d.desired, "worker")} kept.`;
  }
  return `Held at ${plural(d.desired, "worker")}: ${load(d)}${capped(d)}.`;
}

// Newest first. A tick that changed nothing joins the entry before it when that entry aimed at
// the same count: runs of holds collapse into one entry with a count, and the hold that follows
// a scale-out or scale-in disappears into it.
export function collapse(records) {
  const entries = [];
  for (const record of records) {
    const last = entries[entries.length - 1];
    const quiet = !record.acted && !record.error;
    if (last && quiet && !last.record.error && last.record.desired === record.desired) {
      if (last.quiet) {
        last.count += 1;
        last.record = record; // the newest of a run of holds is the one shown
      }
      continue;
    }
    entries.push({ record, first: record, count: 1, quiet });
  }
  return entries.reverse();
}

export function identity(decision) {
  return `${decision.at}|${decision.text || ""}`;
}
