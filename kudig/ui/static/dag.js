// The DAG tab: nodes laid out by the server (/dag, one pass), drawn in SVG, and only those that
// intersect the viewport (a grid index finds them), so 10,000 tasks cost what a screenful costs.
// Pan (drag), zoom (wheel, buttons), groups collapsible (?collapse=id,id), click a node: ?task=.
// The viewport is kept in ?view=x,y,zoom so a link shows the same place.
import { html, Component, api, query, navigate, withQuery, pathOf, ErrorBox } from './lib.js';

const CELL = 400; // grid index cell, in graph pixels
const LABEL_ZOOM = 0.45; // below this zoom, node labels are not drawn
const SVG_BUDGET = 3000; // more visible nodes than this: drawn on a canvas (no labels)

function parseView(v) {
  const m = /^(-?[\d.]+),(-?[\d.]+),([\d.]+)$/.exec(v || '');
  return m ? { x: Number(m[1]), y: Number(m[2]), k: Number(m[3]) } : null;
}

function collapsedFromUrl() {
  return (query().get('collapse') || '').split(',').filter((s) => /^\d+$/.test(s));
}

// A layout asked for early (the session page starts it with its own fetch when it opens on the DAG
// tab), taken once by the DagView that needs it.
const prefetched = new Map();

export function prefetchDag(ns, name) {
  const collapse = collapsedFromUrl().join(',');
  prefetched.set(`${ns}/${name}?${collapse}`, api(`${pathOf('sessions', ns, name, 'dag')}`, { collapse }));
}

function fetchDag(ns, name, collapse) {
  const key = `${ns}/${name}?${collapse}`;
  const p = prefetched.get(key);
  prefetched.delete(key);
  return p || api(`${pathOf('sessions', ns, name, 'dag')}`, { collapse });
}

class Index {
  constructor(nodes) {
    this.cells = new Map();
    for (const n of nodes) {
      const x0 = Math.floor(n.x / CELL);
      const x1 = Math.floor((n.x + n.w) / CELL);
      const y0 = Math.floor(n.y / CELL);
      const y1 = Math.floor((n.y + n.h) / CELL);
      for (let cx = x0; cx <= x1; cx++) {
        for (let cy = y0; cy <= y1; cy++) {
          const key = cx + ',' + cy;
          let c = this.cells.get(key);
          if (!c) this.cells.set(key, (c = []));
          c.push(n);
        }
      }
    }
  }

  query(x, y, w, h) {
    const out = new Set();
    const x0 = Math.floor(x / CELL);
    const x1 = Math.floor((x + w) / CELL);
    const y0 = Math.floor(y / CELL);
    const y1 = Math.floor((y + h) / CELL);
    if ((x1 - x0 + 1) * (y1 - y0 + 1) > this.cells.size) {
      for (const c of this.cells.values()) for (const n of c) if (hit(n, x, y, w, h)) out.add(n);
      return out;
    }
    for (let cx = x0; cx <= x1; cx++) {
      for (let cy = y0; cy <= y1; cy++) {
        const c = this.cells.get(cx + ',' + cy);
        if (c) for (const n of c) if (hit(n, x, y, w, h)) out.add(n);
      }
    }
    return out;
  }
}

function hit(n, x, y, w, h) {
  return n.x < x + w && n.x + n.w > x && n.y < y + h && n.y + n.h > y;
}

export class DagView extends Component {
  constructor() {
    super();
    this.state = { layout: null, error: null, view: { x: 20, y: 20, k: 1 }, size: { w: 900, h: 560 } };
    this.box = null;
    this.canvas = null;
    this.drag = null;
  }

  componentDidMount() {
    this.load();
    this.resize = () => this.box && this.setState({ size: { w: this.box.clientWidth, h: this.box.clientHeight } });
    window.addEventListener('resize', this.resize);
    this.resize();
  }

  componentWillUnmount() {
    window.removeEventListener('resize', this.resize);
    clearTimeout(this.persistTimer);
  }

  componentDidUpdate() {
    const key = collapsedFromUrl().join(',');
    if (key !== this.collapseKey) this.load();
    this.paintCanvas();
  }

  load() {
    const collapse = collapsedFromUrl().join(',');
    this.collapseKey = collapse;
    const { ns, name } = this.props;
    fetchDag(ns, name, collapse).then(
      (layout) => {
        if (this.collapseKey !== collapse) return;
        const byId = new Map(layout.nodes.map((n) => [n.id, n]));
        const adj = new Map();
        for (const e of layout.edges) {
          for (const id of e) {
            let a = adj.get(id);
            if (!a) adj.set(id, (a = []));
            a.push(e);
          }
        }
        this.groups = layout.nodes.filter((n) => n.group && !n.collapsed);
        this.leaves = layout.nodes.filter((n) => !n.group || n.collapsed);
        this.leafIndex = new Index(this.leaves);
        this.groupIndex = new Index(this.groups);
        this.byId = byId;
        this.adj = adj;
        let view = parseView(query().get('view'));
        const sel = this.props.selected && byId.get(this.props.selected.id);
        if (!view && sel) view = { x: this.state.size.w / 2 - sel.x - sel.w / 2, y: this.state.size.h / 2 - sel.y - sel.h / 2, k: 1 };
        this.setState({ layout, view: view || this.state.view, error: null }, () => {
          performance.mark('kudig:dag-rendered');
        });
      },
      (error) => this.setState({ error }),
    );
  }

  setView(view) {
    this.setState({ view });
    clearTimeout(this.persistTimer);
    this.persistTimer = setTimeout(() => {
      const v = `${Math.round(view.x)},${Math.round(view.y)},${view.k.toFixed(3)}`;
      navigate(withQuery({ view: v }), true);
    }, 400);
  }

  zoomAt(factor, cx, cy) {
    const { x, y, k } = this.state.view;
    const nk = Math.min(4, Math.max(0.02, k * factor));
    const f = nk / k;
    this.setView({ x: cx - (cx - x) * f, y: cy - (cy - y) * f, k: nk });
  }

  onWheel(e) {
    e.preventDefault();
    const r = this.box.getBoundingClientRect();
    this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }

  onDown(e) {
    if (e.button !== 0) return;
    this.drag = { sx: e.clientX, sy: e.clientY, x: this.state.view.x, y: this.state.view.y, moved: false };
  }

  onMove(e) {
    const d = this.drag;
    if (!d) return;
    const dx = e.clientX - d.sx;
    const dy = e.clientY - d.sy;
    if (Math.abs(dx) + Math.abs(dy) > 3) d.moved = true;
    if (d.moved) this.setView({ ...this.state.view, x: d.x + dx, y: d.y + dy });
  }

  onUp() {
    setTimeout(() => (this.drag = null), 0);
  }

  clickNode(n, e) {
    e.stopPropagation();
    if (this.drag && this.drag.moved) return;
    navigate(withQuery({ task: n.name }));
  }

  toggle(n, e) {
    e.stopPropagation();
    if (this.drag && this.drag.moved) return;
    const set = new Set(collapsedFromUrl());
    const id = String(n.id);
    if (set.has(id)) set.delete(id);
    else set.add(id);
    navigate(withQuery({ collapse: [...set].sort((a, b) => a - b).join(',') || null }));
  }

  fit() {
    const { layout, size } = this.state;
    if (!layout) return;
    const k = Math.max(0.02, Math.min(1, (size.w - 40) / (layout.width || 1), (size.h - 40) / (layout.height || 1)));
    this.setView({ x: 20, y: 20, k });
  }

  visible() {
    const { view, size } = this.state;
    const gx = -view.x / view.k;
    const gy = -view.y / view.k;
    const gw = size.w / view.k;
    const gh = size.h / view.k;
    return {
      leaves: [...this.leafIndex.query(gx, gy, gw, gh)],
      groups: [...this.groupIndex.query(gx, gy, gw, gh)],
    };
  }

  stateOf(n) {
    const live = this.props.tasks && this.liveState(n.id);
    return live || n.state;
  }

  liveState(id) {
    if (this.tasksRef !== this.props.tasks) {
      this.tasksRef = this.props.tasks;
      this.taskState = new Map(this.props.tasks.map((t) => [t.id, t.state]));
    }
    return this.taskState.get(id);
  }

  paintCanvas() {
    const c = this.canvas;
    if (!c) return;
    const { view, size } = this.state;
    if (!this.canvasNodes && !this.canvasDirty) return;
    this.canvasDirty = Boolean(this.canvasNodes);
    const ctx = c.getContext('2d');
    if (c.width !== size.w || c.height !== size.h) {
      c.width = size.w;
      c.height = size.h;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, size.w, size.h);
    if (!this.canvasNodes) return;
    ctx.setTransform(view.k, 0, 0, view.k, view.x, view.y);
    for (const n of this.canvasNodes) {
      ctx.fillStyle = COLORS[this.stateOf(n)] || '#9aa';
      ctx.fillRect(n.x, n.y, n.w, n.h);
    }
  }

  render() {
    const { layout, error, view, size } = this.state;
    const selected = this.props.selected;
    if (error) return html`<${ErrorBox} error=${error} />`;
    const body = [];
    let count = 0;
    let total = 0;
    this.canvasNodes = null;
    if (layout) {
      total = layout.nodes.length;
      const { leaves, groups } = this.visible();
      count = leaves.length;
      const showLabels = view.k >= LABEL_ZOOM;
      const ids = new Set(leaves.map((n) => n.id));
      const edges = new Set();
      if (leaves.length <= SVG_BUDGET) for (const id of ids) for (const e of this.adj.get(id) || []) edges.add(e);
      const collapsed = new Set(collapsedFromUrl());
      // a group's box clipped to the viewport (plus a margin, so no clipped edge shows): a box
      // thousands of screens tall would otherwise be rasterised, dashes and all, on every frame
      const m = 40 / view.k;
      const vx0 = -view.x / view.k - m;
      const vy0 = -view.y / view.k - m;
      const vx1 = vx0 + size.w / view.k + 2 * m;
      const vy1 = vy0 + size.h / view.k + 2 * m;
      for (const g of groups) {
        const x0 = Math.max(g.x, vx0);
        const y0 = Math.max(g.y, vy0);
        const x1 = Math.min(g.x + g.w, vx1);
        const y1 = Math.min(g.y + g.h, vy1);
        body.push(html`<g key=${'g' + g.id} class="dag-group" data-group=${g.name}>
          <rect x=${x0} y=${y0} width=${Math.max(0, x1 - x0)} height=${Math.max(0, y1 - y0)} rx="6" />
          <text x=${g.x + 8} y=${g.y + 15} class="dag-group-label" onClick=${(e) => this.toggle(g, e)}>${'▾ ' + g.label}</text>
        </g>`);
      }
      for (const e of edges) {
        const a = this.byId.get(e[0]);
        const b = this.byId.get(e[1]);
        if (!a || !b) continue;
        const x1 = a.x + a.w;
        const y1 = a.y + a.h / 2;
        const x2 = b.x;
        const y2 = b.y + b.h / 2;
        const mx = (x1 + x2) / 2;
        body.push(html`<path key=${'e' + e[0] + '-' + e[1]} class="dag-edge" d=${`M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`} />`);
      }
      if (leaves.length > SVG_BUDGET) {
        this.canvasNodes = leaves;
      } else {
        for (const n of leaves) {
          const st = this.stateOf(n);
          const sel = selected && selected.id === n.id;
          body.push(html`<g key=${'n' + n.id} class=${'dag-node st-' + st + (sel ? ' selected' : '') + (n.collapsed || collapsed.has(String(n.id)) ? ' collapsed' : '')}
              data-node=${n.name} onClick=${(e) => (n.collapsed ? this.toggle(n, e) : this.clickNode(n, e))}>
            <rect x=${n.x} y=${n.y} width=${n.w} height=${n.h} rx="4" />
            ${showLabels ? html`<text x=${n.x + 6} y=${n.y + n.h / 2 + 4}>${(n.collapsed ? '▸ ' : '') + clip(n.label, n.w)}</text>` : null}
            <title>${n.name + ' (' + st + ')'}</title>
          </g>`);
        }
      }
    }
    return html`<div class="dag-wrap">
      <div class="dag-tools">
        <button type="button" onClick=${() => this.zoomAt(1.25, size.w / 2, size.h / 2)} title="zoom in">+</button>
        <button type="button" onClick=${() => this.zoomAt(0.8, size.w / 2, size.h / 2)} title="zoom out">−</button>
        <button type="button" onClick=${() => this.fit()}>fit</button>
        <button type="button" onClick=${() => this.setView({ x: 20, y: 20, k: 1 })}>reset</button>
        <span class="dag-count" data-test="dag-count">${layout ? `${count} of ${total} nodes drawn` : 'loading…'}</span>
        ${collapsedFromUrl().length ? html`<a href=${withQuery({ collapse: null })} onClick=${(e) => { e.preventDefault(); navigate(withQuery({ collapse: null })); }}>expand all</a>` : null}
      </div>
      <div class="dag" data-test="dag" ref=${(r) => (this.box = r)}
        onWheel=${(e) => this.onWheel(e)} onPointerDown=${(e) => this.onDown(e)} onPointerMove=${(e) => this.onMove(e)}
        onPointerUp=${() => this.onUp()} onPointerLeave=${() => this.onUp()}>
        <canvas class="dag-canvas" ref=${(r) => (this.canvas = r)} />
        <svg width=${size.w} height=${size.h} class="dag-svg">
          <g transform=${`translate(${view.x},${view.y}) scale(${view.k})`}>${body}</g>
        </svg>
      </div>
      <p class="hint">Drag to pan, wheel to zoom; click a group's title to collapse it, a task to open it.</p>
    </div>`;
  }
}

function clip(label, w) {
  const max = Math.max(3, Math.floor((w - 10) / 7));
  const s = String(label);
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

const COLORS = {
  success: '#3c9a5f', error: '#d04b4b', group_error: '#d04b4b', running: '#3f7fd0', ready: '#d8b13a',
  blocked: '#b7bcc4', planned: '#b7bcc4', canceled: '#8e8e8e', retry_waiting: '#e0894a', group_retry_waiting: '#e0894a',
};
