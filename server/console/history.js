// Entity history: an entity's events newest first, a page at a time, with an optional time
// range, and deleted events with their tombstone and reason when asked for.

import * as api from "./api.js";
import { el, fillForm, formValues, number, parseUtc, payloadCell, tagCell, utc } from "./format.js";

export const PAGE_EVENTS = 50;
const REASON_PREFIX = "reason:";

let ctx, query = null, generation = 0;
export const state = { shown: 0, events: [] };

const $ = (id) => document.getElementById(id);

export function init(c) {
  ctx = c;
  $("history-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    ctx.navigate("history", {
      entity: v.entity, from: v.from, to: v.to, deleted: v.deleted ? "on" : "",
    });
  });
  $("history-more").addEventListener("click", () => load(false));
}

function row(e) {
  const reasons = e.tags.filter((t) => t.startsWith(REASON_PREFIX));
  const tags = e.tags.filter((t) => !t.startsWith(REASON_PREFIX));
  const kind = el("td", { class: "kind" }, e.kind);
  const tr = el("tr", {},
    el("td", { class: "seq" }, String(e.seq)),
    el("td", { class: "time" }, utc(e.ts)),
    kind, tagCell(tags), payloadCell(e));
  tr.dataset.seq = e.seq;
  if (e.deleted_by) {
    tr.classList.add("deleted");
    const reason = reasons.map((r) => r.slice(REASON_PREFIX.length)).join(", ");
    kind.append(el("span", { class: "tomb" },
      `deleted by tombstone #${e.deleted_by}${reason ? ` — reason: ${reason}` : ""}`));
  }
  return tr;
}

async function load(fresh) {
  const mine = ++generation;
  const tbody = $("history-table").tBodies[0];
  if (fresh) {
    tbody.replaceChildren();
    state.shown = 0;
    state.events = [];
    query.after_seq = undefined;
  }
  $("history-more").hidden = true;
  try {
    const r = await api.get("history", { ...query, limit: PAGE_EVENTS, reverse: true });
    if (mine !== generation) return;
    for (const e of r.events) tbody.append(row(e));
    state.shown += r.events.length;
    state.events.push(...r.events);
    const more = r.events.length === PAGE_EVENTS;
    if (more) query.after_seq = r.events[r.events.length - 1].seq;
    $("history-more").hidden = !more;
    $("history-summary").textContent = state.shown === 0
      ? `${query.entity} has no events${query.from_ts || query.to_ts ? " in this time range" : ""}.`
      : `${query.entity}: ${number(state.shown)} event${state.shown === 1 ? "" : "s"} shown, newest first${more ? "; more below" : ""}.`;
    ctx.showError(null);
  } catch (e) {
    if (mine === generation) ctx.showError(e);
  }
}

export function show(params) {
  fillForm($("history-form"), params);
  if (!params.entity) {
    $("history-summary").textContent = "Type an entity (for example product:123) to see what happened to it.";
    $("history-table").tBodies[0].replaceChildren();
    $("history-more").hidden = true;
    $("history-entity").focus();
    return;
  }
  query = {
    entity: params.entity,
    from_ts: parseUtc(params.from),
    to_ts: parseUtc(params.to),
    include_deleted: params.deleted === "on" ? true : undefined,
  };
  load(true);
}

export function hide() {
  generation += 1;
}
