// The dashboard's shell: sign-in with the API token (kept in memory), navigation, and hash routes:
// #/nodes, #/jobs, #/jobs/ID, #/flows, #/flows/ID, #/audit, #/keyset.
import { h, render } from './preact.js';
import { useEffect, useState } from './hooks.js';
import htm from './htm.js';
import { forgetToken, hasToken, onAuthChange, signIn } from './api.js';
import { AuditPage, FlowPage, FlowsPage, JobPage, JobsPage, KeysetPage, NodesPage } from './views.js';

const html = htm.bind(h);

const NAV = [
  ['nodes', 'Nodes'],
  ['jobs', 'Jobs'],
  ['flows', 'Flows'],
  ['audit', 'Audit log'],
  ['keyset', 'Key set'],
];

function parseHash(hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [p, q = ''] = raw.split('?');
  const parts = p
    .split('/')
    .filter(Boolean)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
  return { parts: parts.length ? parts : ['nodes'], query: new URLSearchParams(q) };
}

function useHashRoute() {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

function navigate(hash) {
  if (location.hash !== hash) location.hash = hash;
}

function Login() {
  const [value, setValue] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(value.trim());
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html` <main class="login">
    <form class="card" onSubmit=${submit} autocomplete="off">
      <h1><img src="/ui/icon.svg" alt="" width="28" height="28" /> Writ</h1>
      <p>
        Paste the coord's API token. <code>writ dev --keep</code> prints it (and writes it to <code>$WRIT_HOME/dev.json</code>); a coord started with
        <code>writ coord</code> reads it from <code>WRIT_TOKEN</code>.
      </p>
      <p class="muted small">
        The token stays in this tab's memory: reloading the page signs you out. It is sent only as an <code>Authorization</code> header to this coord.
      </p>
      <label
        >API token <input type="password" name="token" value=${value} onInput=${(e) => setValue(e.currentTarget.value)} autofocus required spellcheck="false"
      /></label>
      ${error ? html`<div class="error" role="alert"><strong>${error.code}</strong>: ${error.message}</div>` : null}
      <button type="submit" disabled=${busy || !value.trim()}>${busy ? 'Checking…' : 'Sign in'}</button>
    </form>
  </main>`;
}

function Page({ route }) {
  const [section, id] = route.parts;
  switch (section) {
    case 'nodes':
      return html`<${NodesPage} />`;
    case 'jobs':
      return id ? html`<${JobPage} key=${id} id=${id} />` : html`<${JobsPage} query=${route.query} navigate=${navigate} />`;
    case 'flows':
      return id ? html`<${FlowPage} key=${id} id=${id} />` : html`<${FlowsPage} query=${route.query} navigate=${navigate} />`;
    case 'audit':
      return html`<${AuditPage} />`;
    case 'keyset':
      return html`<${KeysetPage} />`;
    default:
      return html`<h1>Not found</h1>
        <p>No page <code>#/${route.parts.join('/')}</code>. <a href="#/nodes">Nodes</a></p>`;
  }
}

function App() {
  const [signedIn, setSignedIn] = useState(hasToken());
  const route = useHashRoute();
  useEffect(() => onAuthChange(setSignedIn), []);
  if (!signedIn) return html`<${Login} />`;
  return html` <header class="top">
      <a class="brand" href="#/nodes"><img src="/ui/icon.svg" alt="" width="22" height="22" /> Writ</a>
      <nav>${NAV.map(([k, label]) => html`<a href=${`#/${k}`} class=${route.parts[0] === k ? 'active' : ''} data-nav=${k}>${label}</a>`)}</nav>
      <button class="signout" onClick=${forgetToken}>Sign out</button>
    </header>
    <main class="page" data-page=${route.parts[0]}><${Page} route=${route} /></main>`;
}

const root = document.getElementById('app');
root.textContent = ''; // the static "Loading…" line
render(html`<${App} />`, root);
