// Overview: the store's Stats every 2 s, and the ingest rate from the change in last_seq.

import * as api from "./api.js";
import { bytes, number, rate } from "./format.js";

const POLL_MS = 2000;
let ctx, timer = null, previous = null;
export const state = { stats: null };

const $ = (id) => document.getElementById(id);

export function init(c) {
  ctx = c;
}

async function poll() {
  try {
    const s = await api.get("stats");
    const now = performance.now();
    state.stats = s;
    $("ov-events").textContent = number(s.events);
    $("ov-last-seq").textContent = number(s.last_seq);
    $("ov-first-seq").textContent = number(s.first_seq);
    $("ov-segments").textContent = number(s.segments);
    $("ov-disk").textContent = bytes(s.disk_bytes);
    const ratio = s.raw_bytes > 0 ? ` (${((100 * s.disk_bytes) / s.raw_bytes).toFixed(0)}% of raw)` : "";
    $("ov-disk").title = `${number(s.disk_bytes)} bytes${ratio}`;
    $("ov-raw").textContent = bytes(s.raw_bytes);
    $("ov-tombstones").textContent = number(s.tombstones);
    $("ov-clusters").textContent = number(s.cluster_files);
    $("ov-backlog").textContent = `${number(s.compaction_backlog_segments)} segment${s.compaction_backlog_segments === 1 ? "" : "s"}`;
    if (previous) {
      const seconds = (now - previous.at) / 1000;
      $("ov-rate").textContent = rate((s.last_seq - previous.last_seq) / seconds);
    }
    previous = { at: now, last_seq: s.last_seq };
    const badge = $("ov-state");
    badge.textContent = s.read_only ? "read-only after an I/O fault" : "writable";
    badge.classList.toggle("bad", s.read_only);
    $("ov-updated").textContent = `Updated ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s.`;
    ctx.showError(null);
  } catch (e) {
    ctx.showError(e);
  }
}

export function show() {
  previous = null;
  poll();
  clearInterval(timer);
  timer = setInterval(poll, POLL_MS);
}

export function hide() {
  clearInterval(timer);
  timer = null;
}
