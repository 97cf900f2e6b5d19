// One session: its summary, attempts, the CLI commands to retry/kill it (text to copy), and tabs
// (tasks, DAG, Gantt, params) chosen by ?tab=; ?task= opens one task's panel. Task rows come once
// from the API and are then patched by the /events stream's `task` deltas.
import {
  html, Component, Link, api, stream, query, withQuery, pathOf, fmtTime, isoMs, isoOffset, tzMode,
  ZoneToggle, PhaseBadge, ErrorBox, Copyable, fmtDuration,
} from './lib.js';
import { DagView, prefetchDag } from './dag.js';
import { GanttView } from './gantt.js';

const TABS = ['tasks', 'dag', 'gantt', 'params'];

export function sessionZone(summary) {
  if (tzMode() === 'local') return { kind: 'local' };
  return { kind: 'workflow', offset: summary ? isoOffset(summary.sessionTime) : null };
}

function epochMs(s) {
  return s === null || s === undefined ? null : s * 1000;
}

export class SessionPage extends Component {
  constructor() {
    super();
    this.state = { data: null, error: null, live: 'connecting' };
  }

  componentDidMount() {
    this.load();
  }

  componentDidUpdate(prev) {
    if (prev.ns !== this.props.ns || prev.name !== this.props.name) this.load();
  }

  componentWillUnmount() {
    if (this.stop) this.stop();
  }

  load() {
    const { ns, name } = this.props;
    this.setState({ data: null, error: null });
    if (query().get('tab') === 'dag') prefetchDag(ns, name); // both requests at once
    api(`${pathOf('sessions', ns, name)}`).then(
      (data) => {
        this.byId = new Map(data.tasks.map((t, i) => [t.id, i]));
        this.setState({ data }, () => performance.mark('kudig:session-rendered'));
        this.watch();
      },
      (error) => this.setState({ error }),
    );
  }

  watch() {
    const { ns, name } = this.props;
    if (this.stop) this.stop();
    this.stop = stream(
      '/events',
      { namespace: ns, session: name },
      (type, ev) => {
        const data = this.state.data;
        if (!data || !ev) return;
        if (type === 'session' && ev.summary && ev.summary.name === name && ev.summary.namespace === ns) {
          this.setState({ data: { ...data, summary: ev.summary } });
        } else if (type === 'task' && ev.row && ev.session === name) {
          const tasks = data.tasks.slice();
          const i = this.byId.get(ev.row.id);
          if (i === undefined) {
            this.byId.set(ev.row.id, tasks.length);
            tasks.push(ev.row);
          } else tasks[i] = ev.row;
          this.setState({ data: { ...data, tasks } });
        } else if (type === 'ready') this.setState({ live: 'live' });
      },
      { onState: (s) => this.setState({ live: s === 'open' ? 'connecting' : s }) },
    );
  }

  render() {
    const { ns, name } = this.props;
    const { data, error, live } = this.state;
    if (error) return html`<section class="page"><h1>${name}</h1><${ErrorBox} error=${error} /></section>`;
    if (!data) return html`<section class="page"><h1>${name}</h1><p class="loading">loading…</p></section>`;
    const q = query();
    const tab = TABS.includes(q.get('tab')) ? q.get('tab') : 'tasks';
    const s = data.summary;
    const zone = sessionZone(s);
    const taskName = q.get('task');
    const task = taskName ? data.tasks.find((t) => t.name === taskName || String(t.id) === taskName) : null;
    return html`<section class="page session" data-test="session">
      <nav class="crumbs"><${Link} href=${withQuery({ namespace: ns }, '/sessions')}>Sessions<//> / ${ns} /</nav>
      <h1>${name} <${PhaseBadge} phase=${s.phase} /> <span class=${'live live-' + live}>${live}</span></h1>
      <div class="bar"><${ZoneToggle} zone=${zone} /></div>
      <dl class="summary cols">
        <dt>Workflow</dt><dd><${Link} href=${pathOf('workflows', ns, s.workflow)}>${s.workflow}<//></dd>
        <dt>Session time</dt><dd>${fmtTime(isoMs(s.sessionTime), zone)}</dd>
        <dt>Attempt</dt><dd>${s.attempt ?? ''}</dd>
        <dt>Progress</dt><dd>${s.progress}</dd>
        <dt>Started</dt><dd>${fmtTime(isoMs(s.startedAt), zone)}</dd>
        <dt>Finished</dt><dd>${fmtTime(isoMs(s.finishedAt), zone)}</dd>
        ${s.message ? html`<dt>Message</dt><dd class="msg">${s.message}</dd>` : null}
      </dl>
      ${(s.failedTasks || []).length
        ? html`<div class="failed"><b>Failed tasks</b><ul>
            ${s.failedTasks.map((f) => html`<li><${Link} href=${withQuery({ task: f.name })}>${f.name}<//>: <span class="msg">${f.message}</span></li>`)}
          </ul></div>`
        : null}
      <details class="attempts" open=${(s.attempts || []).length > 1}>
        <summary>Attempts (${(s.attempts || []).length})</summary>
        <table class="list"><thead><tr><th>#</th><th>Revision</th><th>Phase</th><th>Started</th><th>Finished</th></tr></thead>
          <tbody>${(s.attempts || []).map(
            (a) => html`<tr><td>${a.index}</td><td>${a.revision}</td><td><${PhaseBadge} phase=${a.phase} /></td>
              <td>${fmtTime(isoMs(a.startedAt), zone)}</td><td>${fmtTime(isoMs(a.finishedAt), zone)}</td></tr>`,
          )}</tbody></table>
      </details>
      <details class="commands" data-test="commands">
        <summary>CLI commands: ${Object.keys(data.commands || {}).join(', ')} (copy them; this UI is read-only)</summary>
        ${Object.entries(data.commands || {}).map(([k, v]) => html`<${Copyable} label=${k} text=${v} />`)}
      </details>
      <nav class="tabs" role="tablist">
        ${TABS.map(
          (t) => html`<${Link} cls=${t === tab ? 'tab active' : 'tab'} href=${withQuery({ tab: t === 'tasks' ? null : t, view: null })}>${t === 'dag' ? 'DAG' : t[0].toUpperCase() + t.slice(1)}<//>`,
        )}
      </nav>
      <div class="with-panel">
        <div class="tab-body">
          ${tab === 'tasks' ? html`<${TaskTable} tasks=${data.tasks} zone=${zone} selected=${task} />` : null}
          ${tab === 'dag' ? html`<${DagView} ns=${ns} name=${name} tasks=${data.tasks} selected=${task} />` : null}
          ${tab === 'gantt' ? html`<${GanttView} ns=${ns} name=${name} attempt=${s.attempt} tasks=${data.tasks} zone=${zone} />` : null}
          ${tab === 'params' ? html`<${Params} params=${s.params} labels=${s.labels} />` : null}
        </div>
        ${task ? html`<${TaskPanel} ns=${ns} session=${name} task=${task} zone=${zone} commands=${data.commands} />` : null}
      </div>
    </section>`;
  }
}

function depthOf(t, byId) {
  let d = 0;
  for (let p = t.parent; p !== null && p !== undefined && d < 64; p = (byId.get(p) || {}).parent) d++;
  return d;
}

const ROW_H = 26;

// The task table, virtualised: only the rows in (and near) the viewport are in the DOM.
class TaskTable extends Component {
  constructor() {
    super();
    this.state = { top: 0, height: 600 };
    this.ref = null;
  }

  componentDidMount() {
    if (this.ref) this.setState({ height: this.ref.clientHeight || 600 });
    this.scrollToSelected();
  }

  scrollToSelected() {
    const { tasks, selected } = this.props;
    if (!selected || !this.ref) return;
    const i = tasks.indexOf(selected);
    if (i >= 0 && (i * ROW_H < this.ref.scrollTop || i * ROW_H > this.ref.scrollTop + this.ref.clientHeight - ROW_H)) {
      this.ref.scrollTop = Math.max(0, i * ROW_H - 3 * ROW_H);
    }
  }

  render() {
    const { tasks, zone, selected } = this.props;
    const byId = new Map(tasks.map((t) => [t.id, t]));
    const { top, height } = this.state;
    const first = Math.max(0, Math.floor(top / ROW_H) - 10);
    const last = Math.min(tasks.length, Math.ceil((top + height) / ROW_H) + 10);
    const rows = tasks.slice(first, last);
    return html`<div class="tasks" data-test="tasks">
      <div class="thead trow">
        <span class="c-id">id</span><span class="c-name">Task</span><span class="c-state">State</span>
        <span class="c-retries">Retries</span><span class="c-op">Operator</span><span class="c-time">Started</span>
        <span class="c-dur">Duration</span><span class="c-err">Error</span>
      </div>
      <div class="tbody" ref=${(r) => (this.ref = r)} onScroll=${(e) => this.setState({ top: e.currentTarget.scrollTop })}>
        <div class="spacer" style=${{ height: `${tasks.length * ROW_H}px` }}>
          ${rows.map((t, k) => {
            const i = first + k;
            const dur = t.startedAt ? (t.finishedAt || Date.now() / 1000) - t.startedAt : null;
            return html`<div key=${t.id} class=${'trow' + (selected && selected.id === t.id ? ' selected' : '') + (t.group ? ' group' : '')}
                style=${{ top: `${i * ROW_H}px` }} data-task=${t.name}>
              <span class="c-id">${t.id}</span>
              <span class="c-name" style=${{ paddingLeft: `${depthOf(t, byId) * 14}px` }}>
                <${Link} href=${withQuery({ task: t.name })} title=${t.name}>${t.label || t.name}<//></span>
              <span class="c-state"><${PhaseBadge} phase=${t.state} /></span>
              <span class="c-retries">${t.retries || ''}</span>
              <span class="c-op">${t.operator || ''}</span>
              <span class="c-time">${fmtTime(epochMs(t.startedAt), zone)}</span>
              <span class="c-dur">${dur === null ? '' : fmtDuration(dur)}</span>
              <span class="c-err" title=${t.error || ''}>${t.error || ''}</span>
            </div>`;
          })}
        </div>
      </div>
    </div>`;
  }
}

function Params({ params, labels }) {
  const entries = Object.entries(params || {});
  return html`<div class="params" data-test="params">
    ${entries.length === 0 ? html`<p class="empty">No params.</p>` : null}
    <table class="list"><tbody>
      ${entries.map(([k, v]) => html`<tr><th>${k}</th><td><code>${typeof v === 'string' ? v : JSON.stringify(v)}</code></td></tr>`)}
    </tbody></table>
    ${Object.keys(labels || {}).length
      ? html`<h3>Labels</h3><table class="list"><tbody>${Object.entries(labels).map(([k, v]) => html`<tr><th>${k}</th><td>${v}</td></tr>`)}</tbody></table>`
      : null}
  </div>`;
}

export class TaskPanel extends Component {
  constructor() {
    super();
    this.state = { config: null };
  }

  componentDidMount() {
    this.load();
  }

  componentDidUpdate(prev) {
    if (prev.task.name !== this.props.task.name) this.load();
  }

  load() {
    const { ns, session, task } = this.props;
    this.setState({ config: null });
    api(`${pathOf('sessions', ns, session, 'tasks', task.name)}`).then(
      (r) => this.setState({ config: r.config || {} }),
      () => this.setState({ config: {} }),
    );
  }

  render() {
    const { ns, session, task: t, zone, commands } = this.props;
    const { config } = this.state;
    const seg = (a, b) => (a && b ? fmtDuration(b - a) : '');
    const logCmd = commands && commands.log ? commands.log.replace('+TASK', t.name) : null;
    return html`<aside class="panel" data-test="task-panel">
      <div class="panel-head"><b class="task-name">${t.name}</b>
        <${Link} cls="close" href=${withQuery({ task: null })} title="close">×<//></div>
      <dl class="summary">
        <dt>State</dt><dd><${PhaseBadge} phase=${t.state} /></dd>
        <dt>Operator</dt><dd>${t.operator || (t.group ? 'group' : '')}</dd>
        ${t.file ? html`<dt>Defined at</dt><dd>${t.file}${t.line ? ':' + t.line : ''}</dd>` : null}
        <dt>Retries</dt><dd>${t.retries || 0}</dd>
        <dt>Ready</dt><dd>${fmtTime(epochMs(t.readyAt), zone)}</dd>
        <dt>Started</dt><dd>${fmtTime(epochMs(t.startedAt), zone)}</dd>
        <dt>Pod created</dt><dd>${fmtTime(epochMs(t.podCreatedAt), zone)}</dd>
        <dt>Running</dt><dd>${fmtTime(epochMs(t.runningAt), zone)}</dd>
        <dt>Finished</dt><dd>${fmtTime(epochMs(t.finishedAt), zone)}</dd>
        <dt>Waiting</dt><dd>${seg(t.readyAt, t.startedAt)}</dd>
        <dt>Run time</dt><dd>${seg(t.runningAt || t.startedAt, t.finishedAt)}</dd>
        ${t.pod ? html`<dt>Pod</dt><dd>${t.pod}</dd>` : null}
      </dl>
      ${t.error ? html`<div class="error task-error">${t.error}</div>` : null}
      ${t.group ? null : html`<p><${Link} href=${pathOf('sessions', ns, session, 'tasks', t.name, 'log') + (tzMode() === 'local' ? '?tz=local' : '')} cls="log-link">Log<//></p>`}
      ${logCmd ? html`<${Copyable} label="log" text=${logCmd} />` : null}
      <${Copyable} label="link" text=${location.origin + withQuery({})} />
      ${config && Object.keys(config).length
        ? html`<h4>Config</h4><pre class="config">${JSON.stringify(config, null, 2)}</pre>`
        : null}
    </aside>`;
  }
}
