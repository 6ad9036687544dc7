// The console's entry: hash routing (#/, #/executions/ID, #/plugins,
// #/quotas), the token prompt, the live-update indicator.

import { Unauthorized, ApiError, call, token, setToken, forgetToken } from './api.js';
import { onMode } from './live.js';
import { executionsPage, executionPage, pluginsPage, quotasPage, h } from './views.js';

const main = document.getElementById('main');
const panel = document.getElementById('token-panel');
const form = document.getElementById('token-form');
const input = document.getElementById('token-input');
const tokenError = document.getElementById('token-error');
const forget = document.getElementById('forget-token');
let leave = () => {};

onMode(m => {
  const el = document.getElementById('live');
  el.textContent = m;
  el.className = 'live' + (m.startsWith('live') || m.startsWith('polling') ? ' on' : m ? ' err' : '');
});

function askForToken(message) {
  tokenError.hidden = !message;
  tokenError.textContent = message || '';
  panel.hidden = false;
  input.value = '';
  input.focus();
}

form.addEventListener('submit', async ev => {
  ev.preventDefault();
  const given = input.value.trim();
  if (!given) return;
  setToken(given);
  try {
    await call('/v1/plugins');
  } catch (e) {
    forgetToken();
    askForToken(e instanceof Unauthorized ? 'That is not the daemon\'s token.' : e.message);
    return;
  }
  input.value = '';
  panel.hidden = true;
  route();
});

forget.addEventListener('click', () => { forgetToken(); forget.hidden = true; route(); });

async function route() {
  leave();
  leave = () => {};
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const section = path.startsWith('/plugins') ? 'plugins' : path.startsWith('/quotas') ? 'quotas' : 'executions';
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === section);
  forget.hidden = !token();
  try {
    const m = path.match(/^\/executions\/(.+)$/);
    if (m) {
      document.title = 'Execution · Kozmo';
      leave = await executionPage(main, decodeURIComponent(m[1]));
    } else if (section === 'plugins') {
      document.title = 'Plugins · Kozmo';
      leave = await pluginsPage(main);
    } else if (section === 'quotas') {
      document.title = 'Quotas · Kozmo';
      leave = await quotasPage(main);
    } else {
      document.title = 'Executions · Kozmo';
      leave = await executionsPage(main, params);
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      const had = !!token();
      forgetToken();
      main.replaceChildren(h('p.muted', {}, 'This daemon requires its API token.'));
      askForToken(had ? 'The token was refused.' : '');
    } else {
      main.replaceChildren(h('div.card', {}, h('h2.error', {}, e instanceof ApiError && e.status === 404 ? 'Not found' : 'Error'),
        h('p', { id: 'page-error' }, e.message)));
    }
  }
}

window.addEventListener('kozmo-unauthorized', () => {
  leave();
  leave = () => {};
  const had = !!token();
  forgetToken();
  main.replaceChildren(h('p.muted', {}, 'This daemon requires its API token.'));
  askForToken(had ? 'The token was refused.' : '');
});

window.addEventListener('hashchange', route);
route();
