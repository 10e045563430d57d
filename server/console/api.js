// The HTTP/JSON API under /api/v1/ as the console uses it: the token, JSON calls, errors the
// server names, and the Server-Sent Events tail read through fetch (EventSource cannot send an
// Authorization header, and a token in a URL ends up in logs).

const TOKEN_KEY = "echolog.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the server answered: HTTP status, gRPC code name and the server's message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  /** The text the console shows. */
  describe() {
    const what = {
      Unauthenticated: "Not signed in",
      PermissionDenied: "Not allowed",
      InvalidArgument: "Bad input",
      ResourceExhausted: "Too much at once",
      Unavailable: "Server unavailable",
      DeadlineExceeded: "Took too long",
    }[this.code] || this.code || `HTTP ${this.status}`;
    return `${what}: ${this.message}`;
  }
}

function headers() {
  const h = { Accept: "application/json" };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** Query string from an object; arrays repeat their key, empty values are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== "") q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function asError(res) {
  let code = "", message = res.statusText || "request failed";
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || "";
      message = body.error.message || message;
    }
  } catch (_) {
    // Not JSON (a proxy's page, say): keep the status text.
  }
  return new ApiError(res.status, code, message);
}

async function call(path, init) {
  let res;
  try {
    res = await fetch(`/api/v1/${path}`, init);
  } catch (e) {
    throw new ApiError(0, "Unavailable", `the server cannot be reached (${e.message})`);
  }
  if (!res.ok) throw await asError(res);
  return res.json();
}

export function get(path, params = {}, signal) {
  return call(`${path}${query(params)}`, { headers: headers(), signal });
}

export function post(path, body) {
  return call(path, {
    method: "POST",
    headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/**
 * Follows /api/v1/tail from `params.from_seq`, calling `onEvent` for every event in order.
 * Resolves when `signal` aborts or the server ends the stream; rejects with an ApiError.
 */
export async function tail(params, onEvent, signal) {
  let res;
  try {
    res = await fetch(`/api/v1/tail${query(params)}`, {
      headers: { ...headers(), Accept: "text/event-stream" },
      signal,
    });
  } catch (e) {
    if (signal.aborted) return;
    throw new ApiError(0, "Unavailable", `the server cannot be reached (${e.message})`);
  }
  if (!res.ok) throw await asError(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      // One SSE message per blank line; only `data:` lines carry an event, `:` lines keep
      // alive. The unfinished last part waits for the next chunk.
      const messages = buffered.split("\n\n");
      buffered = messages.pop();
      for (const message of messages) {
        const data = message
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(l.startsWith("data: ") ? 6 : 5))
          .join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  } catch (e) {
    if (signal.aborted) return;
    throw new ApiError(0, "Unavailable", `the tail stopped (${e.message})`);
  }
}
