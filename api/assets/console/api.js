// Calls to the daemon's JSON API, with the API token (kept in this tab's
// sessionStorage only, sent as a header: never in a URL).

const KEY = 'kozmo.api-token';

export class Unauthorized extends Error {
  constructor() { super('the daemon wants its API token'); this.name = 'Unauthorized'; }
}

export class ApiError extends Error {
  constructor(status, detail) { super(detail || `HTTP ${status}`); this.status = status; }
}

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(t) { sessionStorage.setItem(KEY, t); }
export function forgetToken() { sessionStorage.removeItem(KEY); }

export function headers(extra = {}) {
  const h = new Headers(extra);
  const t = token();
  if (t) h.set('Authorization', `Bearer ${t}`);
  return h;
}

// fetch() with the token; throws Unauthorized on 401 and ApiError on any
// other error status (with the ErrorBody's detail).
export async function call(path, options = {}) {
  const r = await fetch(path, { ...options, headers: headers(options.headers), cache: 'no-store' });
  if (r.status === 401) throw new Unauthorized();
  if (!r.ok) {
    let detail;
    try { detail = (await r.json()).detail; } catch { /* not JSON */ }
    throw new ApiError(r.status, detail);
  }
  return r;
}

export async function json(path, options) { return (await call(path, options)).json(); }

export const enc = encodeURIComponent;
