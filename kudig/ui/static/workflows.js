// Workflows: the list, and one workflow's definition (.dig, highlighted by building text spans, never
// HTML), revision, project files and a schedule calendar (next session times, past sessions coloured
// by outcome, backfilled and skipped slots marked), in the workflow's zone or the viewer's.
import {
  html, Component, Link, api, query, withQuery, pathOf, fmtTime, isoMs, tzMode, ZoneToggle, PhaseBadge,
  ErrorBox,
} from './lib.js';

export class WorkflowsPage extends Component {
  constructor() {
    super();
    this.state = { items: null, error: null };
  }

  componentDidMount() {
    this.load();
  }

  componentDidUpdate(prev) {
    if (prev.url !== this.props.url) this.load();
  }

  load() {
    const ns = query().get('namespace') || '';
    if (ns === this.ns && this.state.items) return;
    this.ns = ns;
    api('/workflows', { namespace: ns }).then(
      (r) => this.setState({ items: r.items || [], error: null }),
      (error) => this.setState({ error, items: [] }),
    );
  }

  render() {
    const { items, error } = this.state;
    const local = tzMode() === 'local';
    return html`<section class="page workflows">
      <h1>Workflows</h1>
      <div class="bar"><${ZoneToggle} zone=${local ? { kind: 'local' } : { kind: 'workflow' }} /></div>
      <${ErrorBox} error=${error} />
      ${items === null
        ? html`<p class="loading">loading…</p>`
        : html`<table class="list" data-test="workflows">
            <thead><tr><th>Namespace</th><th>Workflow</th><th>Revision</th><th>Schedule</th><th>Zone</th><th>Next session</th><th></th></tr></thead>
            <tbody>${items.map(
              (w) => html`<tr key=${w.namespace + '/' + w.objectName}>
                <td>${w.namespace}</td>
                <td><${Link} href=${pathOf('workflows', w.namespace, w.objectName)}>${w.name}<//></td>
                <td>${w.revision}</td>
                <td><code>${fmtSchedule(w.schedule)}</code></td>
                <td>${w.timezone}</td>
                <td>${w.nextSessionTime ? fmtTime(isoMs(w.nextSessionTime), local ? { kind: 'local' } : { kind: 'workflow', iana: w.timezone }) : ''}</td>
                <td>${w.suspended ? html`<span class="mark">suspended</span>` : null}${w.error ? html`<span class="error-inline">${w.error}</span>` : null}</td>
              </tr>`,
            )}</tbody>
          </table>
          ${items.length === 0 ? html`<p class="empty">No workflows.</p>` : null}`}
    </section>`;
  }
}

function fmtSchedule(s) {
  if (!s) return '';
  if (typeof s === 'string' && s.startsWith('{')) {
    try {
      s = JSON.parse(s);
    } catch {
      return s;
    }
  }
  if (typeof s === 'string') return s;
  return Object.entries(s).map(([k, v]) => `${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ');
}

const TABS = ['definition', 'files', 'calendar'];

export class WorkflowPage extends Component {
  constructor() {
    super();
    this.state = { wf: null, error: null, file: null };
  }

  componentDidMount() {
    this.load();
  }

  componentDidUpdate(prev) {
    if (prev.ns !== this.props.ns || prev.name !== this.props.name) this.load();
    this.loadFile();
  }

  load() {
    const { ns, name } = this.props;
    api(pathOf('workflows', ns, name)).then(
      (wf) => this.setState({ wf, error: null }, () => this.loadFile()),
      (error) => this.setState({ error }),
    );
  }

  loadFile() {
    const path = query().get('file');
    if (!path || path === this.filePath) return;
    this.filePath = path;
    const { ns, name } = this.props;
    api(`${pathOf('workflows', ns, name, 'files')}/${path.split('/').map(encodeURIComponent).join('/')}`).then(
      (file) => this.setState({ file }),
      (error) => this.setState({ file: { path, error: String(error.message) } }),
    );
  }

  render() {
    const { ns, name } = this.props;
    const { wf, error, file } = this.state;
    if (error) return html`<section class="page"><h1>${name}</h1><${ErrorBox} error=${error} /></section>`;
    if (!wf) return html`<section class="page"><h1>${name}</h1><p class="loading">loading…</p></section>`;
    const q = query();
    const tab = TABS.includes(q.get('tab')) ? q.get('tab') : 'definition';
    const zone = tzMode() === 'local' ? { kind: 'local' } : { kind: 'workflow', iana: wf.timezone || 'UTC' };
    return html`<section class="page workflow" data-test="workflow">
      <nav class="crumbs"><${Link} href=${withQuery({ namespace: ns }, '/workflows')}>Workflows<//> / ${ns} /</nav>
      <h1>${wf.name} ${wf.suspended ? html`<span class="mark">suspended</span>` : null}</h1>
      <div class="bar"><${ZoneToggle} zone=${zone} /></div>
      <dl class="summary">
        <dt>Revision</dt><dd>${wf.revision}</dd>
        <dt>Schedule</dt><dd><code>${fmtSchedule(wf.schedule)}</code> (${wf.timezone || 'UTC'})</dd>
        <dt>Sessions</dt><dd><${Link} href=${withQuery({ namespace: ns, workflow: wf.objectName }, '/sessions')}>this workflow's sessions<//></dd>
      </dl>
      ${wf.error ? html`<div class="error">${wf.error}</div>` : null}
      <nav class="tabs">
        ${TABS.map((t) => html`<${Link} cls=${t === tab ? 'tab active' : 'tab'} href=${withQuery({ tab: t === 'definition' ? null : t, file: null })}>${t[0].toUpperCase() + t.slice(1)}<//>`)}
      </nav>
      ${tab === 'definition' ? html`<${DigSource} text=${wf.definition || ''} />` : null}
      ${tab === 'files'
        ? html`<div class="files"><ul data-test="files">${(wf.files || []).map(
            (f) => html`<li><${Link} href=${withQuery({ tab: 'files', file: f })} cls=${q.get('file') === f ? 'active' : ''}>${f}<//></li>`,
          )}</ul>
          ${q.get('file') && file && file.path === q.get('file')
            ? file.error
              ? html`<div class="error">${file.error}</div>`
              : file.text === null
                ? html`<p class="empty">${file.path} is a binary file.</p>`
                : /\.dig$/.test(file.path)
                  ? html`<${DigSource} text=${file.text} />`
                  : html`<pre class="source">${file.text}</pre>`
            : null}</div>`
        : null}
      ${tab === 'calendar' ? html`<${Calendar} wf=${wf} zone=${zone} ns=${ns} />` : null}
    </section>`;
  }
}

// ---- .dig highlighting: a line tokenizer producing [class, text] pairs, rendered as text spans ----

const INTERP = /\$\{[^}]*\}/g;

function interpolated(text, base) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INTERP)) {
    if (m.index > last) out.push([base, text.slice(last, m.index)]);
    out.push(['hl-interp', m[0]]);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push([base, text.slice(last)]);
  return out;
}

export function tokenizeLine(line) {
  const out = [];
  let rest = line;
  const indent = /^\s*(- )?/.exec(rest)[0];
  if (indent) out.push(['', indent]);
  rest = rest.slice(indent.length);
  if (rest.startsWith('#')) return [...out, ['hl-comment', rest]];
  const key = /^("[^"]*"|'[^']*'|[^\s:#][^:#]*?):(\s|$)/.exec(rest);
  if (key) {
    const k = key[1];
    const cls = k.startsWith('+') ? 'hl-task' : k.endsWith('>') ? 'hl-op' : k.startsWith('_') ? 'hl-directive' : 'hl-key';
    out.push([cls, k], ['hl-punct', ':']);
    rest = rest.slice(k.length + 1);
  }
  // a trailing comment (a # after whitespace, outside quotes, approximately)
  const c = /(^|\s)#.*$/.exec(rest);
  const value = c ? rest.slice(0, c.index + c[1].length) : rest;
  const comment = c ? rest.slice(c.index + c[1].length) : '';
  if (/^\s*(["']).*\1\s*$/.test(value)) out.push(...interpolated(value, 'hl-string'));
  else if (/^\s*(-?\d+(\.\d+)?|true|false|null)\s*$/.test(value)) out.push(['hl-literal', value]);
  else out.push(...interpolated(value, ''));
  if (comment) out.push(['hl-comment', comment]);
  return out;
}

export function DigSource({ text }) {
  const lines = String(text).split('\n');
  return html`<pre class="source dig" data-test="definition">${lines.map(
    (line, i) => html`<span class="ln" key=${i}><span class="lno">${i + 1}</span>${tokenizeLine(line).map(([cls, t]) =>
      cls ? html`<span class=${cls}>${t}</span>` : t,
    )}${'\n'}</span>`,
  )}</pre>`;
}

// ---- schedule calendar ----------------------------------------------------------------------------

function dayKey(ms, zone) {
  return fmtTime(ms, zone).slice(0, 10);
}

function Calendar({ wf, zone, ns }) {
  const cal = wf.calendar || { next: [], past: [] };
  const q = query();
  const n = Math.max(1, Math.min(200, Number(q.get('n')) || 20));
  const next = (cal.next || []).slice(0, n).map((t) => ({ ms: isoMs(t), iso: t, kind: 'next' }));
  const past = (cal.past || []).map((p) => ({ ...p, ms: isoMs(p.sessionTime), kind: 'past' }));
  const all = [...past, ...next].filter((e) => e.ms !== null);
  const byDay = new Map();
  for (const e of all) {
    const k = dayKey(e.ms, zone);
    if (!byDay.has(k)) byDay.set(k, []);
    byDay.get(k).push(e);
  }
  // one month (?month=YYYY-MM, default: this month in the zone shown), Monday to Sunday rows
  const thisMonth = fmtTime(Date.now(), zone).slice(0, 7);
  const month = /^\d{4}-\d\d$/.test(q.get('month') || '') ? q.get('month') : thisMonth;
  const [yy, mm] = month.split('-').map(Number);
  const first = Date.UTC(yy, mm - 1, 1);
  const lastDay = new Date(Date.UTC(yy, mm, 0)).toISOString().slice(0, 10);
  const days = [];
  const dow = new Date(first).getUTCDay();
  for (let d = first - ((dow + 6) % 7) * 86400000; ; d += 86400000) {
    const key = new Date(d).toISOString().slice(0, 10);
    if (key > lastDay && days.length % 7 === 0) break;
    days.push(key);
  }
  const shift = (n) => {
    const d = new Date(Date.UTC(yy, mm - 1 + n, 1));
    return d.toISOString().slice(0, 7);
  };
  const monthName = new Date(first).toLocaleString('en-US', { month: 'long', year: 'numeric', timeZone: 'UTC' });
  const newest = past.find((p) => !p.skipped && p.ms !== null);
  const chip = (e) => {
    const t = fmtTime(e.ms, zone, { date: false, seconds: false });
    if (e.kind === 'next') return html`<span class="chip chip-next" title="next session">${t}</span>`;
    const cls = 'chip st-' + String(e.phase || (e.skipped ? 'skipped' : '')).toLowerCase() + (e.backfill ? ' backfill' : '') + (e.skipped ? ' skipped' : '');
    const label = t + (e.backfill ? ' B' : '') + (e.skipped ? ' skipped' : '');
    const title = e.skipped ? 'skipped slot (no session)' : `${e.phase}${e.backfill ? ', backfilled' : ''}`;
    return e.session
      ? html`<${Link} cls=${cls} href=${pathOf('sessions', ns, e.session)} title=${title}>${label}<//>`
      : html`<span class=${cls} title=${title}>${label}</span>`;
  };
  return html`<div class="calendar" data-test="calendar">
    <p class="legend">
      <span class="chip chip-next">next</span> <span class="chip st-succeeded">succeeded</span>
      <span class="chip st-failed">failed</span> <span class="chip st-running">running</span>
      <span class="chip backfill st-succeeded">B = backfilled</span> <span class="chip skipped">skipped</span>
      ${' '}showing the next ${n} (<${Link} href=${withQuery({ n: n * 2 })}>more<//>)
    </p>
    <nav class="cal-nav">
      <${Link} href=${withQuery({ month: shift(-1) })}>« ${shift(-1)}<//>
      <b class="cal-month" data-test="cal-month">${monthName}</b>
      <${Link} href=${withQuery({ month: shift(1) })}>${shift(1)} »<//>
      <${Link} href=${withQuery({ month: null })}>this month<//>
      ${newest ? html`<${Link} href=${withQuery({ month: dayKey(newest.ms, zone).slice(0, 7) })}>newest session's month<//>` : null}
    </nav>
    <div class="cal-grid">
      ${['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'].map((d) => html`<div class="cal-head">${d}</div>`)}
      ${days.map((d) => {
        const es = byDay.get(d) || [];
        const out = d.slice(0, 7) !== month;
        return html`<div class=${'cal-day' + (es.length ? '' : ' empty') + (out ? ' other-month' : '')} data-day=${d}>
          <div class="cal-date">${d.slice(5)}</div>
          ${es.slice(0, 12).map(chip)}
          ${es.length > 12 ? html`<span class="more">+${es.length - 12}</span>` : null}
        </div>`;
      })}
    </div>
    <div class="cal-lists">
      <div><h3>Next session times</h3><ol data-test="next">${next.map((e) => html`<li>${fmtTime(e.ms, zone)}</li>`)}</ol></div>
      <div><h3>Past sessions</h3><ul data-test="past">${past.slice(0, 50).map(
        (p) => html`<li>${fmtTime(p.ms, zone)} ${p.skipped ? html`<span class="mark">skipped</span>` : html`<${PhaseBadge} phase=${p.phase} />`}
          ${p.backfill ? html` <span class="mark">backfill</span>` : null}
          ${p.session ? html` <${Link} href=${pathOf('sessions', ns, p.session)}>${p.session}<//>` : null}</li>`,
      )}</ul></div>
    </div>
  </div>`;
}
