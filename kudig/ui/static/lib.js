// Shared pieces of the kudig web UI: rendering (preact + htm, no build step), the URL as the state,
// the API client (with the viewer's bearer token when the server asks for one), a fetch-based
// server-sent-events reader (EventSource cannot send the Authorization header), time formatting.
// All user data is rendered as text by preact (never innerHTML); links are http(s) or same-origin.
import { h, Component, render } from './vendor/preact.module.js';
import htm from './vendor/htm.module.js';

export const html = htm.bind(h);
export { h, Component, render };

// ---- the URL is the state ------------------------------------------------------------------------

const listeners = new Set();

export function onNavigate(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function notify() {
  for (const fn of listeners) fn();
}

window.addEventListener('popstate', notify);

// Go to a same-origin URL (a path with a query): pushes history unless `replace`.
export function navigate(url, replace = false) {
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  notify();
}

// The current location with some query keys changed (null/'' removes a key).
export function withQuery(changes, path = location.pathname) {
  const q = new URLSearchParams(path === location.pathname ? location.search : '');
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === '') q.delete(k);
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

export function query() {
  return new URLSearchParams(location.search);
}

export function pathOf(...segments) {
  return '/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
}

// A link that navigates inside the app (plain click) and stays a real link (middle click, copy).
export function Link({ href, children, cls, title }) {
  const click = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return html`<a href=${safeHref(href)} class=${cls} title=${title} onClick=${click}>${children}</a>`;
}

// Only same-origin paths and http(s) URLs become links; anything else (javascript:, data:) is dropped.
export function safeHref(url) {
  if (typeof url !== 'string') return undefined;
  if (url.startsWith('/') && !url.startsWith('//')) return url;
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : undefined;
  } catch {
    return undefined;
  }
}

// ---- the API ---------------------------------------------------------------------------------------

const TOKEN_KEY = 'kudig-ui-token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

export async function api(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  const res = await fetch(`/api/v1${path}${s ? '?' + s : ''}`, { headers: headers({ Accept: 'application/json' }) });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (res.status === 401) authListeners.forEach((fn) => fn());
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

const authListeners = new Set();
export function onUnauthorized(fn) {
  authListeners.add(fn);
}

// Reads a text/event-stream with fetch (so the Authorization header is sent) and reconnects after
// a dropped connection, sending Last-Event-ID so the server resumes after the last event seen.
// onEvent(type, data, id) gets parsed JSON; returns a function that stops it.
// Streams still open when the page goes away are aborted, so their connections are closed at once
// (a browser allows six per host).
const openStreams = new Set();
window.addEventListener('pagehide', () => {
  for (const stop of [...openStreams]) stop();
});

export function stream(path, params, onEvent, { onState = () => {}, retryMs = 1000 } = {}) {
  let stopped = false;
  let lastId = null;
  let controller = null;
  let finished = false;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const url = `/api/v1${path}${q.toString() ? '?' + q : ''}`;

  async function once() {
    controller = new AbortController();
    const hdrs = headers({ Accept: 'text/event-stream' });
    if (lastId !== null) hdrs['Last-Event-ID'] = lastId;
    const res = await fetch(url, { headers: hdrs, signal: controller.signal, cache: 'no-store' });
    if (!res.ok) {
      let msg = `${res.status}`;
      try {
        msg = (await res.json()).error || msg;
      } catch {
        /* not JSON */
      }
      throw new ApiError(res.status, msg);
    }
    onState('open');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let ev = { type: 'message', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (ev.data.length) {
            if (ev.id !== null) lastId = ev.id;
            let data = null;
            try {
              data = JSON.parse(ev.data.join('\n'));
            } catch {
              data = ev.data.join('\n');
            }
            if (ev.type === 'end') finished = true;
            onEvent(ev.type, data, ev.id);
          }
          ev = { type: 'message', data: [], id: null };
        } else if (line.startsWith(':')) {
          continue;
        } else {
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
          if (field === 'event') ev.type = val;
          else if (field === 'data') ev.data.push(val);
          else if (field === 'id') ev.id = val;
        }
      }
    }
  }

  (async () => {
    let delay = retryMs;
    while (!stopped && !finished) {
      try {
        await once();
        delay = retryMs;
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          onState('error', e.message);
          return;
        }
      }
      if (stopped || finished) break;
      onState('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
    if (finished) onState('ended');
  })();

  const stop = () => {
    stopped = true;
    openStreams.delete(stop);
    if (controller) controller.abort();
  };
  openStreams.add(stop);
  return stop;
}

// ---- time --------------------------------------------------------------------------------------------

// An ISO time's own UTC offset in minutes ("2024-01-30T00:00:00+09:00" -> 540), or null.
export function isoOffset(iso) {
  const m = typeof iso === 'string' && /([+-])(\d\d):?(\d\d)$|Z$/.exec(iso);
  if (!m) return null;
  if (m[0] === 'Z') return 0;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

function pad(n, w = 2) {
  return String(n).padStart(w, '0');
}

function offsetLabel(min) {
  const s = min < 0 ? '-' : '+';
  const a = Math.abs(min);
  return `${s}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

// A zone to show times in: {kind: 'local'} or {kind: 'workflow', iana?, offset?}.
// Formats epoch milliseconds as "YYYY-MM-DD HH:MM:SS" in that zone.
export function fmtTime(ms, zone, { seconds = true, date = true } = {}) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '';
  let parts;
  if (zone && zone.kind === 'workflow' && zone.iana) {
    parts = zonedParts(ms, zone.iana);
  } else if (zone && zone.kind === 'workflow' && zone.offset !== null && zone.offset !== undefined) {
    const d = new Date(ms + zone.offset * 60000);
    parts = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()];
  } else {
    const d = new Date(ms);
    parts = [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  }
  const [y, mo, da, hh, mi, ss] = parts;
  const t = `${pad(hh)}:${pad(mi)}${seconds ? ':' + pad(ss) : ''}`;
  return date ? `${y}-${pad(mo)}-${pad(da)} ${t}` : t;
}

const partsFormatters = new Map();
export function zonedParts(ms, iana) {
  let f = partsFormatters.get(iana);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: iana,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
    } catch {
      f = new Intl.DateTimeFormat('en-US', { timeZone: 'UTC', hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    }
    partsFormatters.set(iana, f);
  }
  const p = {};
  for (const { type, value } of f.formatToParts(new Date(ms))) p[type] = Number(value);
  return [p.year, p.month, p.day, p.hour % 24, p.minute, p.second];
}

export function localZoneName() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
}

// The label of the zone times are shown in, e.g. "workflow zone (Asia/Tokyo)" / "local (Europe/Paris)".
export function zoneLabel(zone) {
  if (zone.kind === 'local') return `local time (${localZoneName()})`;
  if (zone.iana) return `workflow zone (${zone.iana})`;
  if (zone.offset !== null && zone.offset !== undefined) return `workflow zone (UTC${offsetLabel(zone.offset)})`;
  return "workflow zone (each session's own offset)";
}

export function tzMode() {
  return query().get('tz') === 'local' ? 'local' : 'workflow';
}

// The always-labelled toggle: shows which zone is in use and links to the other one.
export function ZoneToggle({ zone }) {
  const other = zone.kind === 'local' ? 'workflow' : 'local';
  return html`<span class="tz">
    <span class="tz-label">Times: <b data-test="tz-label">${zoneLabel(zone)}</b></span>
    ${' '}<${Link} cls="tz-switch" href=${withQuery({ tz: other === 'workflow' ? null : 'local' })}
      >show ${other === 'local' ? 'local time' : 'workflow zone'}<//>
  </span>`;
}

export function isoMs(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${Math.round(seconds - m * 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function PhaseBadge({ phase }) {
  const p = String(phase || '').toLowerCase();
  return html`<span class=${'badge st-' + p.replace(/[^a-z_]/g, '')}>${phase}</span>`;
}

export function Copyable({ text, label }) {
  const copy = () => {
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  };
  return html`<div class="copy">
    ${label ? html`<span class="copy-label">${label}</span>` : null}
    <code class="copy-text">${text}</code>
    <button type="button" class="copy-btn" title="copy" onClick=${copy}>copy</button>
  </div>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">${String(error.message || error)}</div>`;
}
