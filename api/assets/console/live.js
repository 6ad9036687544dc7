// Live updates: the daemon's Server-Sent Events watch endpoints when it has
// them, read with fetch() and a streamed body (EventSource cannot send the
// Authorization header), resumed with Last-Event-ID; otherwise polling the
// JSON API every second. Every message only says "something changed": the
// page then reads the JSON API, so it never depends on the message format.

import { headers } from './api.js';

const POLL_MS = 1000;
let mode = '';
const listeners = new Set();

export function onMode(f) { listeners.add(f); f(mode); }
function setMode(m) { mode = m; for (const f of listeners) f(m); }

// Follows `sseUrl` (or polls) and calls `refresh()` on each change, at most
// every 200 ms. Returns a stop function.
export function follow(sseUrl, refresh) {
  const stop = new AbortController();
  let timer = null;
  let pending = false;
  let running = false;
  const kick = async () => {
    if (stop.signal.aborted) return;
    if (running) { pending = true; return; }
    running = true;
    try { await refresh(); } catch (e) { console.warn('refresh failed', e); }
    running = false;
    if (pending) { pending = false; setTimeout(kick, 200); }
  };
  const poll = () => {
    setMode('polling every 1 s');
    const tick = async () => {
      if (stop.signal.aborted) return;
      await kick();
      timer = setTimeout(tick, POLL_MS);
    };
    timer = setTimeout(tick, POLL_MS);
  };
  (async () => {
    const ok = sseUrl && await stream(sseUrl, kick, stop.signal);
    if (!ok && !stop.signal.aborted) poll();
  })();
  return () => { stop.abort(); clearTimeout(timer); };
}

// Reads the SSE stream, reconnecting with Last-Event-ID; false when the
// server has no such endpoint (then the caller polls).
async function stream(url, changed, signal) {
  let lastId = null;
  for (let failures = 0; !signal.aborted && failures < 5;) {
    const h = headers({ Accept: 'text/event-stream' });
    if (lastId !== null) h.set('Last-Event-ID', lastId);
    let r;
    try {
      r = await fetch(url, { headers: h, signal, cache: 'no-store' });
    } catch {
      if (signal.aborted) return true;
      failures++;
      setMode('reconnecting…');
      await sleep(1000 * failures);
      continue;
    }
    const type = r.headers.get('content-type') || '';
    if (!r.ok || !type.startsWith('text/event-stream') || !r.body) {
      try { await r.body?.cancel(); } catch { /* gone */ }
      return false;
    }
    failures = 0;
    setMode('live (server events)');
    changed();
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let data = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
          if (line === '') {
            if (data) changed();
            data = false;
          } else if (line.startsWith('id:')) {
            lastId = line.slice(3).trim();
          } else if (line.startsWith('data:')) {
            data = true;
          }
        }
      }
    } catch {
      if (signal.aborted) return true;
    }
    if (signal.aborted) return true;
    setMode('reconnecting…');
    await sleep(500);
  }
  return signal.aborted;
}

function sleep(ms) { return new Promise(r => setTimeout(r, ms)); }
