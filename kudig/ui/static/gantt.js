// The Gantt tab for one attempt: per task, waiting (ready -> started) -> pod requested (started ->
// pod created) -> pod starting (created -> container running) -> running (-> finished), then the
// step gap to the next task, shaded and labelled in ms. Rows are virtualised; the time window is
// ?from=&to= (epoch seconds) so a link shows the same slice.
import { html, Component, api, query, navigate, withQuery, pathOf, fmtTime, fmtDuration, ErrorBox } from './lib.js';

const ROW_H = 24;
const LABEL_W = 280;

function num(v) {
  const n = Number(v);
  return v !== null && v !== '' && Number.isFinite(n) ? n : null;
}

function ticks(from, to, width) {
  const span = to - from;
  const steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const want = Math.max(2, Math.floor(width / 110));
  const step = steps.find((s) => span / s <= want) || 86400 * Math.ceil(span / want / 86400);
  const out = [];
  for (let t = Math.ceil(from / step) * step; t <= to && out.length < 200; t += step) out.push(t);
  return { step, out };
}

export class GanttView extends Component {
  constructor() {
    super();
    this.state = { data: null, error: null, top: 0, height: 520, width: 900 };
    this.ref = null;
  }

  componentDidMount() {
    this.load();
    this.resize = () => this.ref && this.setState({ width: this.ref.clientWidth, height: this.ref.clientHeight });
    window.addEventListener('resize', this.resize);
    this.resize();
  }

  componentWillUnmount() {
    window.removeEventListener('resize', this.resize);
  }

  componentDidUpdate(prev) {
    if (prev.attempt !== this.props.attempt) this.load();
  }

  load() {
    const { ns, name } = this.props;
    const attempt = query().get('attempt') || this.props.attempt || '';
    api(`${pathOf('sessions', ns, name, 'gantt')}`, { attempt }).then(
      (data) => this.setState({ data, error: null }, () => performance.mark('kudig:gantt-rendered')),
      (error) => this.setState({ error }),
    );
  }

  window() {
    const d = this.state.data;
    const q = query();
    const start = d.start ?? 0;
    const end = d.end ?? Date.now() / 1000;
    let from = num(q.get('from'));
    let to = num(q.get('to'));
    if (from === null || to === null || to <= from) {
      from = start;
      to = Math.max(end, start + 0.001);
      const pad = (to - from) * 0.02;
      to += pad;
    }
    return { from, to };
  }

  zoom(f) {
    const { from, to } = this.window();
    const mid = (from + to) / 2;
    const half = ((to - from) * f) / 2;
    navigate(withQuery({ from: (mid - half).toFixed(3), to: (mid + half).toFixed(3) }), true);
  }

  shift(f) {
    const { from, to } = this.window();
    const d = (to - from) * f;
    navigate(withQuery({ from: (from + d).toFixed(3), to: (to + d).toFixed(3) }), true);
  }

  render() {
    const { data, error, top, height, width } = this.state;
    const { zone } = this.props;
    if (error) return html`<${ErrorBox} error=${error} />`;
    if (!data) return html`<p class="loading">loading…</p>`;
    const { from, to } = this.window();
    const track = Math.max(200, width - LABEL_W - 20);
    const px = (t) => ((t - from) / (to - from)) * track;
    const live = new Map((this.props.tasks || []).map((t) => [t.id, t]));
    const rows = data.rows.map((r) => {
      const t = live.get(r.id);
      return t ? { ...r, state: t.state, readyAt: t.readyAt ?? r.readyAt, startedAt: t.startedAt ?? r.startedAt,
        podCreatedAt: t.podCreatedAt ?? r.podCreatedAt, runningAt: t.runningAt ?? r.runningAt, finishedAt: t.finishedAt ?? r.finishedAt } : r;
    });
    const depth = new Map();
    for (const r of rows) depth.set(r.id, r.parent === null || r.parent === undefined ? 0 : (depth.get(r.parent) ?? 0) + 1);
    const first = Math.max(0, Math.floor(top / ROW_H) - 10);
    const last = Math.min(rows.length, Math.ceil((top + height) / ROW_H) + 10);
    const { step, out } = ticks(from, to, track);
    const tickLabel = (t) => (step < 1 ? fmtTime(t * 1000, zone, { date: false }) + '.' + String(Math.round((t % 1) * 1000)).padStart(3, '0') : fmtTime(t * 1000, zone, { date: step >= 86400 }));
    const now = Date.now() / 1000;
    const seg = (cls, a, b, title) => {
      if (a === null || a === undefined || b === null || b === undefined || b < a) return null;
      const l = px(a);
      const w = Math.max(1, px(b) - l);
      if (l > track || l + w < 0) return null;
      return html`<span class=${'seg ' + cls} style=${{ left: `${l}px`, width: `${w}px` }} title=${`${title}: ${fmtDuration(b - a)}`}></span>`;
    };
    return html`<div class="gantt-wrap">
      <div class="gantt-tools">
        <span>Attempt ${data.attempt}</span>
        <button type="button" onClick=${() => this.shift(-0.25)} title="earlier">◀</button>
        <button type="button" onClick=${() => this.zoom(0.5)} title="zoom in">+</button>
        <button type="button" onClick=${() => this.zoom(2)} title="zoom out">−</button>
        <button type="button" onClick=${() => this.shift(0.25)} title="later">▶</button>
        <button type="button" onClick=${() => navigate(withQuery({ from: null, to: null }), true)}>all</button>
        <span class="window" data-test="gantt-window">${fmtTime(from * 1000, zone)} → ${fmtTime(to * 1000, zone)}</span>
        <span class="legend">
          <span class="seg-key seg-wait"></span>waiting <span class="seg-key seg-pod"></span>pod requested
          <span class="seg-key seg-start"></span>pod starting <span class="seg-key seg-run st-success"></span>running
          <span class="seg-key seg-gap"></span>gap to next task
        </span>
      </div>
      <div class="gantt" data-test="gantt" ref=${(r) => (this.ref = r)} onScroll=${(e) => this.setState({ top: e.currentTarget.scrollTop })}>
        <div class="gantt-axis" style=${{ width: `${LABEL_W + track}px` }}>
          <span class="gantt-label-col"></span>
          ${out.map((t) => html`<span class="tick" style=${{ left: `${LABEL_W + px(t)}px` }}>${tickLabel(t)}</span>`)}
        </div>
        <div class="gantt-rows" style=${{ height: `${rows.length * ROW_H}px`, width: `${LABEL_W + track}px` }}>
          ${rows.slice(first, last).map((r, k) => {
            const i = first + k;
            const end = r.finishedAt ?? (r.runningAt || r.startedAt ? now : null);
            const runFrom = r.runningAt ?? r.podCreatedAt ?? r.startedAt;
            const gapEnd = r.gapAfter !== null && r.gapAfter !== undefined && r.finishedAt ? r.finishedAt + r.gapAfter : null;
            return html`<div key=${r.id} class="grow" style=${{ top: `${i * ROW_H}px` }} data-task=${r.name}>
              <span class="gname" style=${{ paddingLeft: `${4 + (depth.get(r.id) || 0) * 12}px` }} title=${r.name}>
                <a href=${withQuery({ tab: null, task: r.name, from: null, to: null })} onClick=${(e) => { e.preventDefault(); navigate(withQuery({ tab: null, task: r.name, from: null, to: null })); }}>${r.name}</a></span>
              <span class="gtrack" style=${{ width: `${track}px` }}>
                ${seg('seg-wait', r.readyAt, r.startedAt, 'waiting')}
                ${seg('seg-pod', r.startedAt, r.podCreatedAt, 'pod requested')}
                ${seg('seg-start', r.podCreatedAt, r.runningAt, 'pod starting')}
                ${seg('seg-run st-' + r.state, runFrom, end, 'running')}
                ${gapEnd !== null ? seg('seg-gap', r.finishedAt, gapEnd, 'gap to the next task') : null}
                ${gapEnd !== null && px(gapEnd) >= 0 && px(r.finishedAt) <= track
                  ? html`<span class="gap-label" data-test="gap" style=${{ left: `${Math.max(0, px(gapEnd)) + 3}px` }}>${`gap ${Math.round(r.gapAfter * 1000)} ms`}</span>`
                  : null}
              </span>
            </div>`;
          })}
        </div>
      </div>
    </div>`;
  }
}
