// The dashboard's two charts on <canvas>: the fleet (stacked by state, stopped drawn apart,
// decisions marked) and the queue. Times are the server's epoch seconds, so history served by
// the web tier and live samples share one axis.

// Bands that cost money, bottom up. "ready" is running minus starting (model still loading).
export const COSTING = ["ready", "starting", "pending", "stopping"];

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim();
}

function niceStep(top, intervals) {
  // A step of 1, 2 or 5 times a power of ten giving at most `intervals` intervals.
  for (let power = 1; ; power *= 10) {
    for (const step of [1, 2, 5]) {
      if (top / (step * power) <= intervals) return step * power;
    }
  }
}

function timeStep(span, width) {
  const most = Math.max(2, Math.floor(width / 80)); // a label needs about 80 px
  return [10, 15, 30, 60, 120, 300, 600].find((s) => span / s <= most) || 600;
}

function ago(seconds) {
  if (seconds === 0) return "now";
  if (seconds < 60) return `\u2212${seconds} s`;
  const rest = seconds % 60;
  return rest ? `\u2212${Math.floor(seconds / 60)}:${String(rest).padStart(2, "0")} min` : `\u2212${seconds / 60} min`;
}

// A cleared canvas with titled axes; returns value -> pixel mappings.
function frame(canvas, { maxValue, start, now, yTitle }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  const left = 44;
  const right = width - 8;
  const top = 10;
  const bottom = height - 34;
  const step = niceStep(Math.max(1, maxValue), height < 150 ? 2 : 4);
  const highest = step * Math.max(1, Math.ceil(maxValue / step));
  const x = (t) => left + ((right - left) * (t - start)) / Math.max(1, now - start);
  const y = (value) => bottom - ((bottom - top) * Math.max(0, value || 0)) / highest;

  context.font = "11px system-ui, sans-serif";
  context.lineWidth = 1;
  context.strokeStyle = color("line");
  context.fillStyle = color("muted");
  context.textAlign = "right";
  for (let value = 0; value <= highest; value += step) {
    const row = Math.round(y(value)) + 0.5;
    context.beginPath();
    context.moveTo(left, row);
    context.lineTo(right, row);
    context.stroke();
    context.fillText(String(value), left - 6, row + 4);
  }
  const every = timeStep(now - start, right - left);
  context.textAlign = "center";
  for (let back = 0; back <= now - start; back += every) {
    const column = Math.round(x(now - back)) + 0.5;
    context.beginPath();
    context.moveTo(column, bottom);
    context.lineTo(column, bottom + 4);
    context.stroke();
    context.fillText(ago(back), Math.min(column, right - 14), bottom + 15);
  }
  context.fillText("time (before now)", (left + right) / 2, height - 3);
  context.save();
  context.translate(11, (top + bottom) / 2);
  context.rotate(-Math.PI / 2);
  context.fillText(yTitle, 0, 0);
  context.restore();
  return { context, x, y, left, right, top, bottom };
}

export function fleetLevels(fleet) {
  const running = fleet.running || 0;
  const starting = Math.min(running, fleet.starting || 0);
  return { ready: running - starting, starting, pending: fleet.pending || 0, stopping: fleet.stopping || 0 };
}

function steps(context, samples, x, level, right) {
  samples.forEach((s, i) => {
    context.lineTo(x(s.t), level(s));
    context.lineTo(i + 1 < samples.length ? x(samples[i + 1].t) : right, level(s));
  });
}

export function drawFleet(canvas, samples, decisions, start, now) {
  const totals = samples.map((s) => COSTING.reduce((sum, k) => sum + fleetLevels(s.fleet)[k], 0));
  const stopped = samples.map((s) => s.fleet.stopped || 0);
  const maxValue = Math.max(2, ...totals, ...stopped);
  const { context, x, y, right, top } = frame(canvas, { maxValue, start, now, yTitle: "instances" });
  if (!samples.length) return;
  // Stacked steps of what costs money, back to front.
  for (let band = COSTING.length - 1; band >= 0; band--) {
    const below = COSTING.slice(0, band + 1);
    context.fillStyle = color(COSTING[band]);
    context.beginPath();
    context.moveTo(x(samples[0].t), y(0));
    steps(context, samples, x, (s) => y(below.reduce((sum, k) => sum + fleetLevels(s.fleet)[k], 0)), right);
    context.lineTo(right, y(0));
    context.closePath();
    context.fill();
  }
  // Stopped instances cost nothing: a dotted outline, not a block.
  context.strokeStyle = color("stopped");
  context.lineWidth = 2;
  context.setLineDash([3, 3]);
  context.beginPath();
  context.moveTo(x(samples[0].t), y(samples[0].fleet.stopped || 0));
  steps(context, samples, x, (s) => y(s.fleet.stopped || 0), right);
  context.stroke();
  context.setLineDash([]);
  // Decisions that changed the fleet: a tick at the top, up for out, down for in.
  context.font = "bold 11px system-ui, sans-serif";
  context.textAlign = "center";
  for (const d of decisions) {
    if (!d.acted || typeof d.at !== "number" || d.at < start) continue;
    const column = Math.round(x(d.at)) + 0.5;
    const out = d.desired > d.capacity;
    context.strokeStyle = color(out ? "out" : "in");
    context.fillStyle = color(out ? "out" : "in");
    context.lineWidth = 1;
    context.setLineDash([2, 2]);
    context.beginPath();
    context.moveTo(column, top + 12);
    context.lineTo(column, y(0));
    context.stroke();
    context.setLineDash([]);
    context.fillText(`${out ? "\u25b2" : "\u25bc"}${d.desired}`, column, top + 9);
  }
}

export function drawQueue(canvas, samples, start, now) {
  const values = samples.flatMap((s) => [s.visible || 0, s.in_flight || 0]);
  const { context, x, y } = frame(canvas, { maxValue: Math.max(4, ...values), start, now, yTitle: "requests" });
  for (const [key, name] of [["in_flight", "in-flight"], ["visible", "visible"]]) {
    context.strokeStyle = color(name);
    context.lineWidth = 2;
    context.beginPath();
    samples.forEach((s, i) => (i ? context.lineTo(x(s.t), y(s[key])) : context.moveTo(x(s.t), y(s[key]))));
    context.stroke();
  }
}

// Instance-seconds of what costs money over the samples: each sample holds until the next.
export function instanceSeconds(samples, now) {
  let total = 0;
  samples.forEach((s, i) => {
    const until = i + 1 < samples.length ? samples[i + 1].t : now;
    const levels = fleetLevels(s.fleet);
    total += COSTING.reduce((sum, k) => sum + levels[k], 0) * Math.max(0, until - s.t);
  });
  return total;
}
