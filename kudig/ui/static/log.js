// A task's log: streamed live while its pod runs (SSE; after a dropped connection the stream resumes
// with Last-Event-ID, so no line is lost or repeated), read as plain text once the pod is gone.
// Lines are appended as text nodes (never parsed as HTML).
import { html, Component, Link, api, stream, withQuery, pathOf, ErrorBox } from './lib.js';

export class LogPage extends Component {
  constructor() {
    super();
    this.state = { status: 'connecting', count: 0, error: null, source: null, follow: true };
    this.pre = null;
    this.lines = 0;
    this.received = 0;
  }

  componentDidMount() {
    this.start();
  }

  componentWillUnmount() {
    if (this.stop) this.stop();
  }

  append(text) {
    if (!this.pre) return;
    this.pre.appendChild(document.createTextNode(text + '\n'));
    this.lines += 1;
    if (this.state.follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  start() {
    const { ns, session, task } = this.props;
    const base = pathOf('sessions', ns, session, 'tasks', task, 'log');
    let seen = -1;
    this.stop = stream(
      `${base}/stream`,
      {},
      (type, data, id) => {
        if (type === 'end') {
          this.setState({ status: data && data.reason === 'no-pod' ? 'no pod' : 'finished' });
          if (data && data.reason === 'no-pod' && this.lines === 0) this.fallback(base);
          return;
        }
        const n = id === null ? seen + 1 : Number(id);
        this.received += 1; // every line event, repeated or not (the tests read it)
        if (this.pre) this.pre.dataset.received = String(this.received);
        if (n <= seen) return; // a resumed stream never repeats a line, but be sure
        seen = n;
        this.append(data && typeof data === 'object' ? String(data.line ?? '') : String(data));
        this.setState({ count: this.lines, status: 'live' });
      },
      {
        onState: (s, msg) => {
          if (s === 'error') {
            this.setState({ status: 'error', error: msg });
            if (this.lines === 0) this.fallback(base);
          } else if (s === 'reconnecting') this.setState({ status: 'reconnecting' });
          else if (s === 'open' && this.state.status !== 'live') this.setState({ status: 'live' });
        },
      },
    );
  }

  // The pod is gone (or the stream is refused): read what kudig keeps as plain text.
  fallback(base) {
    api(base, { offset: 0 }).then(
      (r) => {
        for (const line of r.lines || []) this.append(line);
        this.setState({ count: this.lines, source: r.source, error: null });
      },
      (error) => this.setState({ error }),
    );
  }

  render() {
    const { ns, session, task } = this.props;
    const { status, count, error, source, follow } = this.state;
    return html`<section class="page log">
      <nav class="crumbs"><${Link} href=${withQuery({ namespace: ns }, '/sessions')}>Sessions<//> /
        <${Link} href=${pathOf('sessions', ns, session) + '?task=' + encodeURIComponent(task)}>${session}<//> /</nav>
      <h1><span class="task-name">${task}</span> log</h1>
      <div class="bar">
        <span class=${'live live-' + status.replace(/ /g, '-')} data-test="log-status">${status}</span>
        <span class="count" data-test="log-count">${count} lines</span>
        <label class="chk"><input type="checkbox" checked=${follow} onChange=${(e) => this.setState({ follow: e.currentTarget.checked })} /> follow</label>
      </div>
      <${ErrorBox} error=${error} />
      ${source === 'none' && count === 0
        ? html`<p class="empty">The task's pod is gone and kudig keeps no copy of this log.</p>`
        : null}
      <pre class="logtext" data-test="log" ref=${(r) => (this.pre = r)}></pre>
    </section>`;
  }

  shouldComponentUpdate() {
    return true;
  }
}
