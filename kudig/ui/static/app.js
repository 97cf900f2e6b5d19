// The kudig web UI's entry point: reads the path, shows the page it names (client-side routing on
// real paths: the server answers every page path with index.html), asks for a bearer token when the
// server runs in `bearer` mode.
import { html, Component, render, Link, onNavigate, onUnauthorized, api, token, setToken, ErrorBox } from './lib.js';
import { SessionsPage } from './sessions.js';
import { SessionPage } from './session.js';
import { LogPage } from './log.js';
import { WorkflowsPage, WorkflowPage } from './workflows.js';

// path -> [page, props]
export function route(pathname) {
  const seg = pathname.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  if (seg.length === 0 || (seg[0] === 'sessions' && seg.length === 1)) return ['sessions', {}];
  if (seg[0] === 'sessions' && seg.length === 3) return ['session', { ns: seg[1], name: seg[2] }];
  if (seg[0] === 'sessions' && seg.length === 6 && seg[3] === 'tasks' && seg[5] === 'log')
    return ['log', { ns: seg[1], session: seg[2], task: seg[4] }];
  if (seg[0] === 'workflows' && seg.length === 1) return ['workflows', {}];
  if (seg[0] === 'workflows' && seg.length === 3) return ['workflow', { ns: seg[1], name: seg[2] }];
  return ['notfound', {}];
}

class TokenForm extends Component {
  submit(e) {
    e.preventDefault();
    setToken(e.currentTarget.elements.token.value.trim());
    location.reload();
  }

  render() {
    return html`<section class="page token">
      <h1>Sign in</h1>
      <p>This kudig UI makes every request with your own Kubernetes token, so you see what your RBAC
        lets you see. Paste a token (for example from <code>kubectl create token NAME</code>); it is
        kept in this tab only (sessionStorage) and sent as an Authorization header.</p>
      ${this.props.error ? html`<${ErrorBox} error=${this.props.error} />` : null}
      <form onSubmit=${(e) => this.submit(e)}>
        <input type="password" name="token" size="60" autocomplete="off" placeholder="bearer token" />
        <button type="submit">Use this token</button>
      </form>
    </section>`;
  }
}

class App extends Component {
  constructor() {
    super();
    this.state = { url: location.pathname + location.search, info: null, needToken: false, error: null };
  }

  componentDidMount() {
    onNavigate(() => {
      this.setState({ url: location.pathname + location.search });
      window.scrollTo(0, window.scrollY);
    });
    onUnauthorized(() => this.setState({ needToken: true }));
    api('/info').then(
      (info) => this.setState({ info, needToken: info.authMode === 'bearer' && !token() }),
      (error) => this.setState({ error }),
    );
  }

  componentDidUpdate() {
    const page = route(location.pathname)[0];
    document.title = `kudig · ${page}`;
  }

  render() {
    const { url, info, needToken, error } = this.state;
    const [page, props] = route(location.pathname);
    let body;
    if (error) body = html`<${ErrorBox} error=${error} />`;
    else if (!info) body = html`<p class="loading">loading…</p>`;
    else if (needToken) body = html`<${TokenForm} error=${token() ? 'The token was refused (401). Paste another one.' : null} />`;
    else if (page === 'sessions') body = html`<${SessionsPage} url=${url} />`;
    else if (page === 'session') body = html`<${SessionPage} key=${props.ns + '/' + props.name} ...${props} url=${url} />`;
    else if (page === 'log') body = html`<${LogPage} key=${url} ...${props} />`;
    else if (page === 'workflows') body = html`<${WorkflowsPage} url=${url} />`;
    else if (page === 'workflow') body = html`<${WorkflowPage} key=${props.ns + '/' + props.name} ...${props} url=${url} />`;
    else body = html`<section class="page"><h1>Not found</h1><p>No page at this address.</p></section>`;
    return html`<div class="app">
      <header class="top">
        <${Link} href="/sessions" cls="brand">kudig<//>
        <nav>
          <${Link} href="/sessions" cls=${page === 'sessions' || page === 'session' || page === 'log' ? 'active' : ''}>Sessions<//>
          <${Link} href="/workflows" cls=${page.startsWith('workflow') ? 'active' : ''}>Workflows<//>
        </nav>
        <span class="info">${info ? `${info.authMode}${info.namespace ? ' · ' + info.namespace : ''} · read-only` : ''}
          ${info && info.authMode === 'bearer' && token()
            ? html` <button type="button" class="linkish" onClick=${() => { setToken(''); location.reload(); }}>forget token</button>`
            : null}</span>
      </header>
      <main>${body}</main>
    </div>`;
  }
}

render(html`<${App} />`, document.getElementById('app'));
