// The sessions list: server-side filters (namespace, workflow, phase, session-time range) and
// cursor paging, all in the URL; rows patched in place from the /events stream.
import {
  html, Component, Link, api, stream, query, navigate, withQuery, pathOf, fmtTime, isoMs, isoOffset,
  tzMode, ZoneToggle, PhaseBadge, ErrorBox, fmtDuration,
} from './lib.js';

export const PHASES = ['Pending', 'Running', 'Succeeded', 'Failed', 'Killed'];
const FILTERS = ['namespace', 'workflow', 'phase', 'from', 'to', 'cursor'];

function filtersFromUrl() {
  const q = query();
  const f = {};
  for (const k of FILTERS) f[k] = q.get(k) || '';
  return f;
}

// Whether a summary pushed by /events belongs on the first page of this filtered list.
function matches(s, f) {
  if (f.namespace && s.namespace !== f.namespace) return false;
  if (f.workflow && s.workflow !== f.workflow) return false;
  if (f.phase && !f.phase.split(',').includes(s.phase)) return false;
  const t = isoMs(s.sessionTime);
  if (f.from && t !== null && t < isoMs(f.from)) return false;
  if (f.to && t !== null && t >= isoMs(f.to)) return false;
  return true;
}

// datetime-local values <-> ISO strings in the viewer's local time (with its offset).
function toInput(iso) {
  const ms = isoMs(iso);
  if (ms === null) return '';
  return fmtTime(ms, { kind: 'local' }, { seconds: false }).replace(' ', 'T');
}

function fromInput(v) {
  if (!v) return '';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return '';
  const off = -d.getTimezoneOffset();
  const sign = off < 0 ? '-' : '+';
  const a = Math.abs(off);
  return `${v.length === 16 ? v + ':00' : v}${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

export class SessionsPage extends Component {
  constructor() {
    super();
    this.state = { items: null, next: null, error: null, namespaces: [], live: 'connecting' };
  }

  componentDidMount() {
    api('/namespaces').then((r) => this.setState({ namespaces: r.items || [] }), () => {});
    this.load();
  }

  componentDidUpdate(prev) {
    if (prev.url !== this.props.url) this.load();
  }

  componentWillUnmount() {
    if (this.stop) this.stop();
  }

  load() {
    const f = filtersFromUrl();
    const key = JSON.stringify(f);
    if (key === this.key) return;
    this.key = key;
    this.setState({ error: null, items: null });
    api('/sessions', { ...f, limit: query().get('limit') || '' }).then(
      (r) => {
        if (this.key !== key) return;
        this.setState({ items: r.items || [], next: r.next || null });
        this.watch(f);
      },
      (e) => this.setState({ error: e, items: [] }),
    );
  }

  watch(f) {
    if (this.stop) this.stop();
    const firstPage = !f.cursor;
    this.stop = stream(
      '/events',
      { namespace: f.namespace },
      (type, data) => {
        const items = this.state.items || [];
        if (type === 'session' && data && data.summary) {
          const s = data.summary;
          const i = items.findIndex((r) => r.namespace === s.namespace && r.name === s.name);
          if (i >= 0) {
            if (!matches(s, f)) {
              this.setState({ items: items.filter((_, j) => j !== i) });
            } else {
              const copy = items.slice();
              copy[i] = s;
              this.setState({ items: copy });
            }
          } else if (firstPage && matches(s, f)) {
            const t = isoMs(s.sessionTime) || 0;
            const at = items.findIndex((r) => (isoMs(r.sessionTime) || 0) < t);
            const copy = items.slice();
            copy.splice(at < 0 ? copy.length : at, 0, s);
            this.setState({ items: copy });
          }
        } else if (type === 'deleted' && data) {
          this.setState({ items: items.filter((r) => !(r.namespace === data.namespace && r.name === data.name)) });
        } else if (type === 'ready') {
          this.setState({ live: 'live' });
        }
      },
      { onState: (s) => this.setState({ live: s === 'open' ? 'connecting' : s }) },
    );
  }

  submit(e) {
    e.preventDefault();
    const form = e.currentTarget;
    const v = (n) => (form.elements[n] ? form.elements[n].value.trim() : '');
    const phases = PHASES.filter((p) => form.elements['phase-' + p] && form.elements['phase-' + p].checked);
    navigate(
      withQuery({
        namespace: v('namespace'),
        workflow: v('workflow'),
        phase: phases.join(','),
        from: fromInput(v('from')),
        to: fromInput(v('to')),
        cursor: null,
      }),
    );
  }

  render() {
    const f = filtersFromUrl();
    const { items, next, error, namespaces, live } = this.state;
    const mode = tzMode();
    const selected = new Set(f.phase ? f.phase.split(',') : []);
    const nsOptions = namespaces.includes(f.namespace) || !f.namespace ? namespaces : [f.namespace, ...namespaces];
    const zoneOf = (s) => (mode === 'local' ? { kind: 'local' } : { kind: 'workflow', offset: isoOffset(s.sessionTime) });
    return html`<section class="page sessions">
      <h1>Sessions <span class=${'live live-' + live} title="live updates">${live}</span></h1>
      <form class="filters" data-test="filters" onSubmit=${(e) => this.submit(e)} key=${this.key}>
        <label>Namespace
          <select name="namespace" value=${f.namespace}>
            <option value="">all</option>
            ${nsOptions.map((n) => html`<option value=${n}>${n}</option>`)}
          </select></label>
        <label>Workflow <input name="workflow" value=${f.workflow} placeholder="any" size="16" /></label>
        <fieldset class="phases"><legend>Phase</legend>
          ${PHASES.map(
            (p) => html`<label class="chk"><input type="checkbox" name=${'phase-' + p} checked=${selected.has(p)} />${p}</label>`,
          )}
        </fieldset>
        <label>Session time from <input type="datetime-local" name="from" value=${toInput(f.from)} /></label>
        <label>to <input type="datetime-local" name="to" value=${toInput(f.to)} /></label>
        <button type="submit">Apply</button>
        ${' '}<${Link} href="/sessions" cls="reset">reset<//>
      </form>
      <div class="bar"><${ZoneToggle} zone=${mode === 'local' ? { kind: 'local' } : { kind: 'workflow' }} /></div>
      <${ErrorBox} error=${error} />
      ${items === null
        ? html`<p class="loading">loading…</p>`
        : html`<table class="list" data-test="sessions">
            <thead><tr><th>Namespace</th><th>Session</th><th>Workflow</th><th>Session time</th><th>Phase</th>
              <th>Attempt</th><th>Progress</th><th>Duration</th></tr></thead>
            <tbody>
              ${items.map(
                (s) => html`<tr key=${s.namespace + '/' + s.name} data-session=${s.namespace + '/' + s.name}>
                  <td>${s.namespace}</td>
                  <td><${Link} href=${pathOf('sessions', s.namespace, s.name) + (mode === 'local' ? '?tz=local' : '')}>${s.name}<//>
                    ${s.backfill ? html` <span class="mark" title="created by kudig backfill">backfill</span>` : null}</td>
                  <td><${Link} href=${pathOf('workflows', s.namespace, s.workflow)}>${s.workflow}<//></td>
                  <td class="time">${fmtTime(isoMs(s.sessionTime), zoneOf(s))}</td>
                  <td><${PhaseBadge} phase=${s.phase} /></td>
                  <td>${s.attempt ?? ''}</td>
                  <td>${s.progress}</td>
                  <td>${s.startedAt ? fmtDuration(((isoMs(s.finishedAt) || Date.now()) - isoMs(s.startedAt)) / 1000) : ''}</td>
                </tr>`,
              )}
            </tbody>
          </table>
          ${items.length === 0 ? html`<p class="empty">No sessions match.</p>` : null}
          <nav class="pager">
            ${f.cursor ? html`<${Link} href=${withQuery({ cursor: null })}>« newest<//>` : null}
            ${next ? html` <${Link} href=${withQuery({ cursor: next })} cls="next">older »<//>` : null}
          </nav>`}
    </section>`;
  }
}
