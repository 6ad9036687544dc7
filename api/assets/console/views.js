// The pages: executions (list), one execution, plugins, quotas. Plain DOM;
// every value from the daemon is inserted as text, never as HTML.

import { call, json, enc, ApiError } from './api.js';
import { follow } from './live.js';

const ACTIVE = ['Queued', 'Running', 'Succeeding', 'Failing', 'Retrying', 'Aborting'];
const PHASES = [...ACTIVE, 'Succeeded', 'Failed', 'Aborted'];
const TERMINAL = new Set(['Succeeded', 'Failed', 'Aborted']);
const PAGE = 50;
// Most executions the list keeps in the page (read 1000 at a time).
const MAX_KEPT = 20000;
const FILE_CHUNK = 256 * 1024;

// h('tag.class', {attr}, child, ...): an element; strings become text nodes.
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const badge = p => h('span.badge.' + p, { dataset: { phase: p } }, p);
const when = iso => iso ? new Date(iso).toLocaleString() : '';
const whenMs = ms => ms ? new Date(ms).toLocaleString() : '';
const cell = (label, ...c) => h('td', { 'data-label': label }, ...c);

function ago(iso) {
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

// ---------------------------------------------------------------- list

// What the list knows: every execution read so far, by id.
const known = new Map();
let loadedAll = false;
let lastFull = 0;

async function readPages(query, into) {
  let after = null;
  for (let n = 0; n < MAX_KEPT / 1000; n++) {
    const q = new URLSearchParams(query);
    q.set('limit', '1000');
    if (after) q.set('after', after);
    const page = await json(`/v1/executions?${q}`);
    for (const e of page.items) into.set(e.id, e);
    if (!page.next) return true;
    after = page.next;
  }
  return false;
}

// Brings `known` up to date: everything every 30 s, otherwise the active
// phases, ids after the last one, and the executions that left the active
// phases since the last look.
async function refreshKnown() {
  if (!loadedAll || Date.now() - lastFull > 30000) {
    const all = new Map();
    await readPages({}, all);
    known.clear();
    for (const [k, v] of all) known.set(k, v);
    loadedAll = true;
    lastFull = Date.now();
    return;
  }
  const active = new Map();
  await Promise.all(ACTIVE.map(p => readPages({ phase: p }, active)));
  const ids = [...known.keys()].sort();
  const fresh = new Map();
  if (ids.length) {
    const q = new URLSearchParams({ limit: '1000', after: ids[ids.length - 1] });
    const page = await json(`/v1/executions?${q}`);
    for (const e of page.items) fresh.set(e.id, e);
  }
  const left = [...known.values()].filter(e => !TERMINAL.has(e.phase) && !active.has(e.id) && !fresh.has(e.id));
  await Promise.all(left.map(async e => {
    try { known.set(e.id, await json(`/v1/executions/${enc(e.id)}`)); }
    catch (err) { if (err instanceof ApiError && err.status === 404) known.delete(e.id); else throw err; }
  }));
  for (const m of [active, fresh]) for (const [k, v] of m) known.set(k, v);
}

const SINCE = { any: 0, '15m': 900, '1h': 3600, '24h': 86400, '7d': 604800 };

export async function executionsPage(main, params) {
  const state = {
    phase: params.get('phase') || '',
    type: params.get('type') || '',
    since: params.get('since') || 'any',
    page: Math.max(0, Number(params.get('page') || 0) | 0),
  };
  const setHash = () => {
    const q = new URLSearchParams();
    if (state.phase) q.set('phase', state.phase);
    if (state.type) q.set('type', state.type);
    if (state.since !== 'any') q.set('since', state.since);
    if (state.page) q.set('page', state.page);
    history.replaceState(null, '', `#/${q.toString() ? '?' + q : ''}`);
  };
  const phaseSel = h('select', { id: 'filter-phase', onchange: e => { state.page = 0; state.phase = e.target.value; setHash(); draw(); } },
    h('option', { value: '' }, 'every phase'), PHASES.map(p => h('option', { value: p, selected: p === state.phase }, p)));
  const typeSel = h('select', { id: 'filter-type', onchange: e => { state.page = 0; state.type = e.target.value; setHash(); draw(); } });
  const sinceSel = h('select', { id: 'filter-since', onchange: e => { state.page = 0; state.since = e.target.value; setHash(); draw(); } },
    Object.keys(SINCE).map(k => h('option', { value: k, selected: k === state.since }, k === 'any' ? 'any time' : `last ${k}`)));
  const body = h('tbody');
  const info = h('span.muted');
  const prev = h('button', { type: 'button', id: 'page-prev', onclick: () => { state.page--; setHash(); draw(); } }, '← Newer');
  const next = h('button', { type: 'button', id: 'page-next', onclick: () => { state.page++; setHash(); draw(); } }, 'Older →');
  main.replaceChildren(
    h('h1', {}, 'Executions'),
    h('div.filters', {},
      h('label', {}, 'Phase', phaseSel),
      h('label', {}, 'Task type', typeSel),
      h('label', {}, 'Submitted', sinceSel)),
    h('div.card', {},
      h('table.responsive', { id: 'executions' },
        h('thead', {}, h('tr', {}, ['Id', 'Phase', 'Task type', 'Plugin phase', 'Attempt', 'Submitted', 'Updated'].map(t => h('th', {}, t)))),
        body),
      h('div.pager', {}, prev, next, info)));

  let types = '';
  const rowCache = new Map();
  function refreshAges() {
    for (const span of body.querySelectorAll('[data-ago]')) {
      const text = ago(span.dataset.ago);
      if (span.textContent !== text) span.textContent = text;
    }
  }
  function draw() {
    const all = [...known.values()];
    const typeList = [...new Set(all.map(e => e.task_type))].sort();
    if (typeList.join('\n') !== types) {
      types = typeList.join('\n');
      typeSel.replaceChildren(h('option', { value: '' }, 'every type'),
        typeList.map(t => h('option', { value: t, selected: t === state.type }, t)));
    }
    const cutoff = SINCE[state.since] ? Date.now() - SINCE[state.since] * 1000 : 0;
    const rows = all
      .filter(e => (!state.phase || e.phase === state.phase) && (!state.type || e.task_type === state.type)
        && (!cutoff || new Date(e.created_at).getTime() >= cutoff))
      .sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id.localeCompare(a.id));
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    const shown = rows.slice(state.page * PAGE, state.page * PAGE + PAGE);
    // A row is rebuilt only when its execution changed (a selection or a
    // pointer on it survives the live updates); its times are refreshed.
    const trs = shown.map(e => {
      const sig = JSON.stringify([e.phase, e.waiting, e.plugin_phase, e.plugin_phase_version, e.attempt, e.updated_at]);
      const old = rowCache.get(e.id);
      if (old && old.sig === sig) return old.tr;
      const tr = h('tr', { dataset: { id: e.id } },
        cell('Id', h('a', { href: `#/executions/${enc(e.id)}` }, e.id)),
        cell('Phase', h('div.ph', {}, badge(e.phase), e.waiting ? h('div.muted', {}, e.waiting)
          : e.plugin_phase === 'PhaseWaitingForResources' && !TERMINAL.has(e.phase) ? h('div.muted', {}, 'waiting for a resource token') : null)),
        cell('Task type', e.task_type),
        cell('Plugin phase', `${e.plugin_phase} v${e.plugin_phase_version}`),
        cell('Attempt', e.attempt),
        cell('Submitted', h('span', { title: when(e.created_at), dataset: { ago: e.created_at } })),
        cell('Updated', h('span', { title: when(e.updated_at), dataset: { ago: e.updated_at } })));
      rowCache.set(e.id, { sig, tr });
      return tr;
    });
    if (rowCache.size > 4 * PAGE) {
      const keep = new Set(shown.map(e => e.id));
      for (const id of [...rowCache.keys()]) if (!keep.has(id)) rowCache.delete(id);
    }
    const same = trs.length === body.children.length && trs.every((tr, i) => body.children[i] === tr);
    if (!same) body.replaceChildren(...trs);
    refreshAges();
    if (!shown.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, known.size ? 'No execution matches these filters.' : 'No executions yet. Submit one: kozmo submit examples/shell-hello.json')));
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    info.textContent = `${rows.length} execution${rows.length === 1 ? '' : 's'} · page ${state.page + 1} of ${pages}`
      + (known.size >= MAX_KEPT ? ` (the first ${MAX_KEPT} read)` : '');
  }
  const refresh = async () => { await refreshKnown(); if (main.isConnected) draw(); };
  await refresh();
  // Server events of every execution (not filtered by phase: a row must
  // also see its execution leave the phase). A `change` carries the
  // execution's status: taken in as it is, drawn at most every 250 ms.
  let drawTimer = null;
  const onMessage = (name, data) => {
    if (name !== 'change' || !data || !data.execution || !data.execution.id) return false;
    known.set(data.execution.id, data.execution);
    if (!drawTimer) drawTimer = setTimeout(() => { drawTimer = null; if (main.isConnected) draw(); }, 250);
    return true;
  };
  const stop = follow('/v1/executions/watch', refresh, onMessage);
  // "5 s ago" keeps counting while no message comes.
  const ages = setInterval(refreshAges, 5000);
  return () => { stop(); clearInterval(ages); clearTimeout(drawTimer); };
}

// ---------------------------------------------------------------- one

function waitCard(w) {
  const card = h('div.card.wait' + (w.waiting ? '' : '.none'), { id: 'wait' });
  const title = {
    resources: 'Waiting for a resource token', plugin_not_loaded: 'Waiting: plugin not loaded',
    plugin_call: 'Waiting for a plugin call', abort_pending: 'Abort pending', queued: 'Queued',
    running: 'Running', finished: 'Finished',
  }[w.kind] || w.kind;
  card.append(h('h2', {}, title), h('p.reason', { id: 'wait-reason', dataset: { kind: w.kind } }, w.reason || (w.waiting ? '' : 'Not waiting for anything.')));
  if (w.resources.length) {
    card.append(h('table.responsive', { id: 'wait-resources' },
      h('thead', {}, h('tr', {}, ['Namespace', 'Tokens in use / quota', 'Waiting', 'Place in line', 'Held by'].map(t => h('th', {}, t)))),
      h('tbody', {}, w.resources.map(r => h('tr', {},
        cell('Namespace', h('code', {}, r.namespace)),
        cell('Tokens in use / quota', `${r.in_use} / ${r.quota}`, usageBar(r.in_use, r.quota)),
        cell('Waiting', r.waiting),
        cell('Place in line', r.position ? `${r.position} of ${r.waiting}` : 'unknown'),
        cell('Held by', r.holders.length ? r.holders.map(id => h('div', {}, h('a', { href: `#/executions/${enc(id)}` }, id))) : '—'))))));
  }
  return card;
}

function usageBar(used, quota) {
  const pct = quota > 0 ? Math.min(100, Math.round(100 * used / quota)) : 100;
  const bar = h('div.bar' + (used >= quota ? '.full' : ''), { title: `${used} of ${quota}` }, h('i'));
  bar.firstChild.style.width = `${pct}%`;
  return bar;
}

function eventReason(e) {
  const b = e.body || {};
  if (Array.isArray(b.reasons) && b.reasons.length) return b.reasons.join('; ');
  if (b.error && b.error.message) return `${b.error.code || ''} ${b.error.message}`.trim();
  if (b.reason) return String(b.reason);
  if (b.message) return String(b.message);
  return '';
}

function timeline(events) {
  return h('table.responsive', { id: 'timeline' },
    h('thead', {}, h('tr', {}, ['When', 'Event', 'Attempt', 'Phase', 'Version', 'Reason'].map(t => h('th', {}, t)))),
    h('tbody', {}, events.map(e => h('tr', { dataset: { kind: e.kind } },
      h('td.when', { 'data-label': 'When' }, h('span', { title: `reported ${whenMs(e.reported_at_ms)}` }, whenMs(e.occurred_at_ms))),
      cell('Event', e.kind),
      cell('Attempt', e.attempt),
      cell('Phase', e.phase),
      cell('Version', e.version),
      cell('Reason', h('span.reason', {}, eventReason(e)))))));
}

// The task logs the plugin named in its events (name → uri).
function namedLogs(events) {
  const logs = new Map();
  for (const e of events) for (const l of (e.body?.info?.logs || [])) if (l.name && l.uri) logs.set(l.uri, l.name);
  return logs;
}

export async function executionPage(main, id) {
  const head = h('h1', {}, 'Execution ', h('code', {}, id));
  const abortBtn = h('button.danger', { type: 'button', id: 'abort', hidden: true }, 'Abort');
  const summary = h('div.card', { id: 'summary' });
  const waitSlot = h('div');
  const errorSlot = h('div');
  const outputsSlot = h('div');
  const files = h('ul.files', { id: 'files' });
  const viewer = h('pre', { id: 'file-view', hidden: true });
  const viewerInfo = h('p.muted', { id: 'file-info' });
  const more = h('button', { type: 'button', id: 'file-more', hidden: true }, 'Load more');
  const events = h('div');
  main.replaceChildren(
    h('p', {}, h('a', { href: '#/' }, '← Executions')),
    head,
    h('div.filters', {}, h('span', { id: 'exec-phase' }), h('div.actions', {}, abortBtn)),
    summary, waitSlot, errorSlot, outputsSlot,
    h('div.card', {}, h('h2', {}, 'Timeline'), events),
    h('div.card', {}, h('h2', {}, 'Logs and files'), files, viewerInfo, viewer, more));

  let stopped = false;
  let lastEvents = '';
  let lastWait = '';
  let lastFiles = '';
  let shownFile = null;
  let fileOffset = 0;

  // Two clicks: "Abort", then "Confirm abort" (within 5 s).
  let armed = null;
  abortBtn.addEventListener('click', async () => {
    if (!armed) {
      abortBtn.textContent = 'Confirm abort';
      armed = setTimeout(() => { armed = null; abortBtn.textContent = 'Abort'; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    abortBtn.textContent = 'Aborting…';
    abortBtn.disabled = true;
    try {
      await call(`/v1/executions/${enc(id)}/abort`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ reason: 'aborted from the console' }) });
      await refresh();
    } catch (e) { alertError(e); abortBtn.disabled = false; abortBtn.textContent = 'Abort'; }
  });

  async function openFile(path, append) {
    if (!append) { shownFile = path; fileOffset = 0; viewer.textContent = ''; }
    const q = new URLSearchParams({ path, offset: String(fileOffset), limit: String(FILE_CHUNK) });
    const r = await call(`/v1/executions/${enc(id)}/file?${q}`);
    const text = await r.text();
    const size = Number(r.headers.get('x-file-size') || 0);
    fileOffset = Number(r.headers.get('x-file-offset') || 0) + new TextEncoder().encode(text).length;
    viewer.textContent += text;
    viewer.hidden = false;
    viewer.dataset.path = path;
    viewerInfo.textContent = `${path} — ${Math.min(fileOffset, size)} of ${size} bytes`;
    more.hidden = fileOffset >= size;
    for (const a of files.querySelectorAll('a')) a.classList.toggle('sel', a.dataset.path === path);
  }
  more.addEventListener('click', () => shownFile && openFile(shownFile, true).catch(alertError));

  async function refresh() {
    if (stopped) return;
    const [e, w, ev, fl] = await Promise.all([
      json(`/v1/executions/${enc(id)}`),
      json(`/v1/executions/${enc(id)}/wait`),
      json(`/v1/executions/${enc(id)}/events`),
      json(`/v1/executions/${enc(id)}/files`),
    ]);
    const out = e.phase === 'Succeeded' ? await json(`/v1/executions/${enc(id)}/outputs`) : null;
    if (!main.isConnected) return;
    document.getElementById('exec-phase').replaceChildren(badge(e.phase), ' ', h('span.muted', {}, `${e.plugin_phase} v${e.plugin_phase_version}`));
    abortBtn.hidden = TERMINAL.has(e.phase) || !!e.abort_requested;
    summary.replaceChildren(h('div.grid', {},
      [['Task type', e.task_type], ['Plugin', e.plugin_id || '—'], ['Attempt', e.attempt],
        ['System failures', e.system_failures], ['Generated name', h('code', {}, e.generated_name)],
        ['Submitted', when(e.created_at)], ['Updated', when(e.updated_at)],
        ['Attempt started', when(e.attempt_started_at)],
        ...(e.abort_requested ? [['Abort requested', e.abort_requested]] : [])]
        .map(([k, v]) => h('div', {}, h('span', {}, k), v))));
    const wSig = JSON.stringify(w);
    if (wSig !== lastWait) { lastWait = wSig; waitSlot.replaceChildren(...(w.kind === 'finished' ? [] : [waitCard(w)])); }
    const errs = [];
    if (e.error) errs.push(h('p', { id: 'exec-error' }, h('strong', {}, e.error.code), ` (${e.error.kind}): `, h('span.reason', {}, e.error.message)));
    if (e.last_handler_error) {
      const he = e.last_handler_error;
      errs.push(h('p', {}, h('strong', {}, he.panic ? 'Plugin panic' : 'Handler error'), ` in attempt ${he.attempt} at ${when(he.at)}: `, h('span.reason', {}, he.message)));
    }
    errorSlot.replaceChildren(...(errs.length ? [h('div.card', {}, h('h2.error', {}, 'Error'), ...errs)] : []));
    outputsSlot.replaceChildren(...(out && out.outputs ? [h('div.card', {}, h('h2', {}, 'Outputs'), h('pre', { id: 'outputs' }, JSON.stringify(out.outputs, null, 2)))] : []));
    const evSig = JSON.stringify(ev.items.map(x => x.seq));
    if (evSig !== lastEvents) { lastEvents = evSig; events.replaceChildren(timeline(ev.items)); }
    const logs = namedLogs(ev.items);
    const nameOf = path => { for (const [uri, name] of logs) if (uri.endsWith('/' + path)) return name; return null; };
    const flSig = JSON.stringify([fl, evSig, shownFile]);
    if (flSig !== lastFiles) files.replaceChildren(...(fl.items.length ? fl.items.map(f => {
      const name = nameOf(f.path);
      return h('li', {}, h('a', { href: '#', dataset: { path: f.path, log: name || '' }, class: f.path === shownFile ? 'sel' : null,
        onclick: ev2 => { ev2.preventDefault(); openFile(f.path).catch(alertError); } }, name ? `${name}` : f.path.split('/').pop()),
      ' ', h('span.muted', {}, `${f.path} · ${f.size} bytes`));
    }) : [h('li.muted', {}, 'No files in the data store for this execution.')]));
    if (flSig !== lastFiles && fl.truncated) files.append(h('li.muted', {}, 'More files exist than listed.'));
    lastFiles = flSig;
    if (shownFile && !viewer.hidden && fileOffset < FILE_CHUNK) await openFile(shownFile).catch(() => {});
    // A finished execution changes no more: one last look was enough.
    if (TERMINAL.has(e.phase)) { stopped = true; stopFollow(); }
  }

  let stopFollow = () => {};
  await refresh();
  if (!stopped) stopFollow = follow(`/v1/executions/${enc(id)}/watch`, refresh);
  return () => { stopped = true; stopFollow(); };
}

function alertError(e) {
  const p = document.getElementById('flash');
  if (p) p.textContent = e.message;
  else document.getElementById('main').prepend(h('p.error', { id: 'flash' }, e.message));
}

// ---------------------------------------------------------------- plugins

export async function pluginsPage(main) {
  const plugins = await json('/v1/plugins');
  main.replaceChildren(h('h1', {}, 'Plugins'), h('div.card', {},
    h('table.responsive', { id: 'plugins' },
      h('thead', {}, h('tr', {}, ['Id', 'Task types', 'Default', 'Isolation', 'File', 'Interface', 'ABI'].map(t => h('th', {}, t)))),
      h('tbody', {}, plugins.map(p => h('tr', { dataset: { id: p.id } },
        cell('Id', h('strong', {}, p.id)),
        cell('Task types', p.task_types.join(', ') || '—'),
        cell('Default', p.is_default ? 'yes' : 'no'),
        cell('Isolation', p.isolated ? 'own process' : 'in the daemon'),
        cell('File', h('code', {}, p.file)),
        cell('Interface', p.interface_version),
        cell('ABI', p.abi)))))));
  return () => {};
}

// ---------------------------------------------------------------- quotas

export async function quotasPage(main) {
  const body = h('tbody');
  main.replaceChildren(h('h1', {}, 'Quotas'),
    h('p.muted', {}, 'Resource namespaces plugins registered: how many tokens each grants at once, who holds them and who waits.'),
    h('div.card', {}, h('table.responsive', { id: 'quotas' },
      h('thead', {}, h('tr', {}, ['Namespace', 'In use / quota', 'Waiting', 'Held by', 'Waiting (in line)'].map(t => h('th', {}, t)))),
      body)));
  const ids = (list, known) => !known ? h('span.muted', {}, 'not listed by this resource manager')
    : list.length ? list.map(id => h('div', {}, h('a', { href: `#/executions/${enc(id)}` }, id))) : '—';
  const refresh = async () => {
    const q = await json('/v1/quotas');
    body.replaceChildren(...(q.items.length ? q.items.map(n => h('tr', { dataset: { namespace: n.namespace } },
      cell('Namespace', h('code', {}, n.namespace)),
      cell('In use / quota', `${n.in_use} / ${n.quota}`, usageBar(n.in_use, n.quota)),
      cell('Waiting', n.waiting),
      cell('Held by', ids(n.holders, n.members_known)),
      cell('Waiting (in line)', ids(n.waiters, n.members_known)))) : [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No plugin registered a quota.'))]));
  };
  await refresh();
  return follow(null, refresh);
}
