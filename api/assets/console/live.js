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
// every 500 ms. `onMessage(name, data)`, if given, sees each server event
// first and returns true when it took it in without a refresh. Returns a
// stop function.
export function follow(sseUrl, refresh, onMessage) {
  const stop = new AbortController();
  let timer = null;
  let pending = false;
  let running = false;
  const kick = async () => {
    if (stop.signal.aborted) return;
    if (running) { pending = true; return; }
    running = true;
    try {
      await refresh();
    } catch (e) {
      // The token was changed or withdrawn meanwhile: the page asks again.
      if (e && e.name === 'Unauthorized') window.dispatchEvent(new Event('kozmo-unauthorized'));
      else console.warn('refresh failed', e);
    }
    running = false;
    if (pending) { pending = false; setTimeout(kick, 500); }
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
    const message = (name, data) => {
      let handled = false;
      try { handled = !!(onMessage && onMessage(name, data)); } catch { handled = false; }
      if (!handled) kick();
    };
    const ok = sseUrl && await stream(sseUrl, kick, message, stop.signal);
    if (!ok && !stop.signal.aborted) poll();
  })();
  return () => { stop.abort(); clearTimeout(timer); setMode(''); };
}

// Reads the SSE stream, reconnecting with Last-Event-ID; false when the
// server has no such endpoint (then the caller polls). A stream the server
// ends after an `end` or `gone` message (the execution finished or was
// removed) is not reopened.
async function stream(url, changed, message, signal) {
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
    let data = null;
    let name = 'message';
    let last = '';
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
            if (data !== null) {
              let parsed = null;
              try { parsed = JSON.parse(data); } catch { /* not JSON: still a change */ }
              last = name;
              message(name, parsed);
            }
            data = null;
            name = 'message';
          } else if (line.startsWith(':')) {
            // a comment: keep-alive
          } else if (line.startsWith('id:')) {
            lastId = line.slice(3).trim();
          } else if (line.startsWith('event:')) {
            name = line.slice(6).trim();
          } else if (line.startsWith('data:')) {
            const d = line.slice(5).replace(/^ /, '');
            data = data === null ? d : `${data}\n${d}`;
          }
        }
      }
    } catch {
      if (signal.aborted) return true;
    }
    if (signal.aborted || last === 'end' || last === 'gone') return true;
    setMode('reconnecting…');
    await sleep(500);
  }
  return signal.aborted;
}

function sleep(ms) { return new Promise(r => setTimeout(r, ms)); }
