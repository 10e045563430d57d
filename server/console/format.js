// Formatting shared by the pages. Times are shown and entered in UTC, as the store keeps them
// (milliseconds since the Unix epoch), so a shared link means the same hours to everyone.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

export function utc(ms) {
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) return String(ms);
  return d.toISOString().replace("T", " ").replace(".000Z", "").replace("Z", "");
}

/** A datetime-local value read as UTC; undefined when empty. */
export function parseUtc(value) {
  if (!value) return undefined;
  const ms = Date.parse(`${value}${value.length === 16 ? ":00" : ""}Z`);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Milliseconds as a datetime-local value in UTC. */
export function toInput(ms) {
  return new Date(ms).toISOString().slice(0, 19);
}

export function number(n) {
  return Number(n).toLocaleString("en-US");
}

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function rate(perSecond) {
  if (!Number.isFinite(perSecond)) return "–";
  return `${number(Math.round(perSecond))}/s`;
}

/** Comma- or space-separated tags from an input. */
export function splitTags(text) {
  return (text || "").split(/[\s,]+/).filter(Boolean);
}

/** Tags as chips, the tombstone's `reason:` tag left to the caller. */
export function tagCell(tags) {
  const td = el("td");
  for (const t of tags) td.append(el("span", { class: "tag" }, t));
  return td;
}

/** The payload pretty-printed when it is JSON, else its size. */
export function payloadCell(e) {
  const td = el("td");
  if (e.payload_json !== undefined) {
    td.append(el("pre", {}, JSON.stringify(e.payload_json, null, 2)));
  } else if (e.payload) {
    const size = Math.floor((e.payload.length * 3) / 4) - (e.payload.match(/=*$/)[0].length);
    td.append(el("pre", {}, `binary, ${number(size)} bytes (base64 ${e.payload.slice(0, 48)}${e.payload.length > 48 ? "…" : ""})`));
  } else {
    td.append(el("span", { class: "muted" }, "empty"));
  }
  return td;
}

/** Reads form fields into a plain object of strings ("on" for checked boxes). */
export function formValues(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = String(v).trim();
  return out;
}

/** Sets form fields from an object (the URL's query); fields it lacks go back to their defaults. */
export function fillForm(form, values) {
  for (const input of form.elements) {
    if (!input.name) continue;
    const v = values[input.name];
    if (input.type === "checkbox") {
      input.checked = v === "on" || v === "true" || v === "1";
    } else if (input.tagName === "SELECT") {
      const fallback = [...input.options].find((o) => o.defaultSelected) || input.options[0];
      input.value = v !== undefined && [...input.options].some((o) => o.value === v) ? v : fallback.value;
    } else {
      input.value = v !== undefined ? v : "";
    }
  }
}
