// Live tail: events as they are committed, from the next seq on, filtered by entity, kind and
// tags. Every event is counted (the counters are exact); the table shows the newest ones from
// a bounded buffer and is redrawn at most RENDER_MS apart, so a fast stream cannot freeze the
// tab. Pause freezes the table while counting goes on.

import * as api from "./api.js";
import { el, fillForm, formValues, number, payloadCell, rate, splitTags, tagCell, utc } from "./format.js";

/** Events kept in the page; older ones are dropped from the buffer (never from the counts). */
export const BUFFER_EVENTS_MAX = 500;
/** Rows drawn in the table. */
const ROWS_SHOWN_MAX = 200;
const RENDER_MS = 250;
const RATE_WINDOW_MS = 2000;

let ctx, abort = null, timer = null;
export const state = {
  running: false, paused: false, received: 0, lastSeq: 0, fromSeq: 0, buffer: [],
  drawnSeq: 0, arrivals: [],
};

const $ = (id) => document.getElementById(id);

export function init(c) {
  ctx = c;
  $("tail-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    start(formValues(ev.target));
  });
  $("tail-stop").addEventListener("click", () => stop("stopped"));
  $("tail-pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("tail-pause").textContent = state.paused ? "Resume" : "Pause";
    render();
  });
}

function onEvent(e) {
  state.received += 1;
  state.lastSeq = e.seq;
  state.buffer.push(e);
  if (state.buffer.length > BUFFER_EVENTS_MAX * 2) state.buffer.splice(0, state.buffer.length - BUFFER_EVENTS_MAX);
}

function tick() {
  const now = performance.now();
  state.arrivals.push([now, state.received]);
  while (state.arrivals.length > 1 && now - state.arrivals[0][0] > RATE_WINDOW_MS) state.arrivals.shift();
  render();
}

function render() {
  if (state.buffer.length > BUFFER_EVENTS_MAX) state.buffer.splice(0, state.buffer.length - BUFFER_EVENTS_MAX);
  $("tail-received").textContent = number(state.received);
  $("tail-last-seq").textContent = state.lastSeq ? number(state.lastSeq) : "–";
  const [first, last] = [state.arrivals[0], state.arrivals[state.arrivals.length - 1]];
  if (first && last && last[0] > first[0]) {
    $("tail-rate").textContent = rate(((last[1] - first[1]) * 1000) / (last[0] - first[0]));
  }
  $("tail-state").textContent = !state.running ? $("tail-state").textContent
    : state.paused ? "paused" : "live";
  if (state.paused || state.drawnSeq === state.lastSeq) return;
  state.drawnSeq = state.lastSeq;
  const rows = state.buffer.slice(-ROWS_SHOWN_MAX).reverse().map((e) => el("tr", { "data-seq": e.seq },
    el("td", { class: "seq" }, String(e.seq)),
    el("td", { class: "time" }, utc(e.ts)),
    el("td", {}, e.entity),
    el("td", {}, e.kind),
    tagCell(e.tags),
    payloadCell(e)));
  $("tail-table").tBodies[0].replaceChildren(...rows);
  $("tail-note").textContent = state.received > ROWS_SHOWN_MAX
    ? `Showing the newest ${ROWS_SHOWN_MAX} of ${number(state.received)} events received since seq ${number(state.fromSeq)}.`
    : `Events received since seq ${number(state.fromSeq)}.`;
}

async function start(values) {
  stop("stopped");
  const filters = { entity: values.entity, kind: values.kind, tag: splitTags(values.tags) };
  history.replaceState(null, "", `#/tail${api.query({ entity: values.entity, kind: values.kind, tags: values.tags })}`);
  Object.assign(state, {
    running: true, paused: false, received: 0, lastSeq: 0, buffer: [], drawnSeq: -1, arrivals: [],
  });
  $("tail-pause").textContent = "Pause";
  $("tail-table").tBodies[0].replaceChildren();
  for (const b of ["tail-stop", "tail-pause"]) $(b).disabled = false;
  $("tail-state").textContent = "connecting";
  const mine = new AbortController();
  abort = mine;
  try {
    // From the next event on: the current last seq is the starting point.
    const s = await api.get("stats");
    state.fromSeq = s.last_seq + 1;
    if (mine.signal.aborted) return;
    timer = setInterval(tick, RENDER_MS);
    $("tail-state").textContent = "live";
    ctx.showError(null);
    await api.tail({ ...filters, from_seq: state.fromSeq }, onEvent, mine.signal);
    if (!mine.signal.aborted) stop("ended by the server");
  } catch (e) {
    if (abort === mine) stop("stopped");
    ctx.showError(e);
  }
}

function stop(why) {
  if (abort) abort.abort();
  abort = null;
  clearInterval(timer);
  timer = null;
  const was = state.running;
  state.running = false;
  if (was) render();
  $("tail-state").textContent = why;
  for (const b of ["tail-stop", "tail-pause"]) $(b).disabled = true;
}

export function show(params) {
  fillForm($("tail-form"), params);
}

export function hide() {
  stop("stopped");
}
