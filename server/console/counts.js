// Counts: events per minute, hour or day for an entity, kind and tags over a time range, as
// a chart (uPlot) and a table. Empty buckets are zero in the chart; the table lists the
// buckets the server answered.

import * as api from "./api.js";
import { el, fillForm, formValues, number, parseUtc, splitTags, toInput, utc } from "./format.js";

const BUCKET_MS = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
/** Past this many buckets the chart shows only the non-empty ones. */
const ZERO_FILL_BUCKETS_MAX = 100_000;

let ctx, chart = null, generation = 0;
export const state = { answer: null, chart: null, query: null };

const $ = (id) => document.getElementById(id);

export function init(c) {
  ctx = c;
  $("counts-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    ctx.navigate("counts", { ...v, deleted: v.deleted ? "on" : "" });
  });
  window.addEventListener("resize", () => {
    if (chart) chart.setSize(size());
  });
}

function size() {
  // The page's width, not the chart box's: the box is hidden (0 wide) before the first chart.
  const width = Math.max(260, $("page-counts").clientWidth - 18);
  return { width, height: Math.min(320, Math.max(200, Math.round(width * 0.4))) };
}

/** x (seconds, as uPlot wants) and y for every bucket of the range, empty ones as 0. */
function series(buckets, width, from, to) {
  const byStart = new Map(buckets.map((b) => [Number(b.start_ts), Number(b.count)]));
  const first = from !== undefined ? Math.floor(from / width) * width : Number(buckets[0]?.start_ts);
  const end = to !== undefined ? to : Number(buckets[buckets.length - 1]?.start_ts) + width;
  const xs = [], ys = [];
  if (buckets.length > 0 && (end - first) / width <= ZERO_FILL_BUCKETS_MAX) {
    for (let t = first; t < end; t += width) {
      xs.push(t / 1000);
      ys.push(byStart.get(t) || 0);
    }
  } else {
    for (const b of buckets) {
      xs.push(Number(b.start_ts) / 1000);
      ys.push(Number(b.count));
    }
  }
  return [xs, ys];
}

function draw(data, kind, label) {
  if (chart) chart.destroy();
  chart = null;
  const box = $("counts-chart");
  box.replaceChildren();
  box.hidden = data[0].length === 0 || typeof uPlot === "undefined";
  if (box.hidden) return;
  const bars = kind !== "line";
  chart = new uPlot({
    ...size(),
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.05)] } },
    series: [
      { label: "bucket (UTC)" },
      {
        label,
        stroke: "#2456c7",
        fill: bars ? "rgba(36, 86, 199, 0.55)" : "rgba(36, 86, 199, 0.10)",
        width: bars ? 0 : 2,
        paths: bars ? uPlot.paths.bars({ size: [0.8, 48] }) : undefined,
        points: { show: !bars && data[0].length <= 200 },
        value: (u, v) => (v === null ? "–" : number(v)),
      },
    ],
    axes: [{}, { values: (u, vals) => vals.map((v) => number(v)) }],
    legend: { live: true },
  }, data, box);
}

async function run(params) {
  const mine = ++generation;
  const bucket = BUCKET_MS[params.bucket] ? params.bucket : "hour";
  const q = {
    entity: params.entity, kind: params.kind, tag: splitTags(params.tags),
    from_ts: parseUtc(params.from), to_ts: parseUtc(params.to), bucket,
    include_deleted: params.deleted === "on" ? true : undefined,
  };
  state.query = q;
  state.answer = null;
  state.chart = null;
  try {
    const r = await api.get("count", q);
    if (mine !== generation) return;
    state.answer = r;
    const what = [q.entity, q.kind, ...q.tag].filter(Boolean).join(", ") || "all events";
    $("counts-summary").textContent =
      `${number(r.total)} events (${what}) in ${number(r.buckets.length)} non-empty ${bucket} bucket${r.buckets.length === 1 ? "" : "s"}.`;
    const tbody = $("counts-table").tBodies[0];
    tbody.replaceChildren(...r.buckets.map((b) =>
      el("tr", {}, el("td", {}, utc(b.start_ts)), el("td", {}, number(b.count)))));
    draw(series(r.buckets, BUCKET_MS[bucket], q.from_ts, q.to_ts), params.chart, what);
    state.chart = chart;
    ctx.showError(null);
  } catch (e) {
    if (mine === generation) ctx.showError(e);
  }
}

export function show(params) {
  const p = { ...params };
  if (!p.from && !p.to) {
    // The last 24 hours, whole hours, until the user says otherwise.
    const hour = BUCKET_MS.hour;
    const to = Math.ceil(Date.now() / hour) * hour;
    p.from = toInput(to - 24 * hour);
    p.to = toInput(to);
  }
  fillForm($("counts-form"), p);
  run(p);
}

export function hide() {
  generation += 1;
}
