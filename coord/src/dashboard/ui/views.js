// The dashboard's pages. Each reads the API with the in-memory token; lists are polled (no list stream
// exists), a job's and a flow's page follow their server-sent event streams.
import { h } from './preact.js';
import { useCallback, useEffect, useRef, useState } from './hooks.js';
import htm from './htm.js';
import { api, follow } from './api.js';
import { FlowDag } from './dag.js';

const html = htm.bind(h);
const enc = encodeURIComponent;

export const NODE_STATES = [
  'discovered',
  'inspected',
  'commissioned',
  'install-pending',
  'installing',
  'installed',
  'active',
  'draining',
  'reprovisioning',
  'rescue',
  'failed',
  'retired',
];
export const JOB_STATUSES = ['admitted', 'queued', 'running', 'succeeded', 'failed', 'refused'];
const FLOW_STATUSES = ['running', 'succeeded', 'failed', 'cancelled'];
const TERMINAL = new Set(['succeeded', 'failed', 'refused', 'cancelled']);

// ---- small pieces ----------------------------------------------------------------------------------

/** Calls `load` now and every `ms` while mounted (and when `deps` change); keeps the last good answer. */
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null, at: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    let timer;
    const run = async () => {
      try {
        const data = await load();
        if (live) setState({ data, error: null, at: Date.now() });
      } catch (error) {
        if (live) setState((s) => ({ ...s, error }));
      }
      if (live) timer = setTimeout(run, ms);
    };
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

/** Re-renders every second (for "3 s ago"). */
function useNow() {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  return now;
}

function ago(iso, now) {
  if (!iso) return 'never';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (s < 0) return `in ${duration(-s)}`;
  return `${duration(s)} ago`;
}

function duration(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function Ago({ iso }) {
  const now = useNow();
  return html`<time datetime=${iso ?? ''} title=${iso ?? ''}>${ago(iso, now)}</time>`;
}

export function Badge({ status }) {
  return html`<span class=${`badge st-${status}`} data-status=${status}>${status}</span>`;
}

function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert"><strong>${error.code ?? 'ERROR'}</strong>: ${error.message}</div>`;
}

function Loading({ what }) {
  return html`<p class="muted">Loading ${what}…</p>`;
}

function Labels({ labels }) {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return html`<span class="muted">none</span>`;
  return entries.map(([k, v]) => html`<span class="label">${k}=${v}</span> `);
}

function bytes(n) {
  if (typeof n !== 'number') return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** One line about a node's inventory: host facts (`writ runner`) or the enrollment inventory (boot image). */
function inventoryLine(inv) {
  if (!inv || typeof inv !== 'object') return null;
  const parts = [];
  if (inv.hostname) parts.push(inv.hostname);
  if (inv.dmi?.product) parts.push(inv.dmi.product);
  if (inv.cpu) parts.push(`${inv.cpu.threads ?? '?'} threads${inv.cpu.model ? ` (${inv.cpu.model})` : ''}`);
  const mem = inv.memoryBytes ?? inv.memory?.totalBytes;
  if (mem) parts.push(`${bytes(mem)} memory`);
  if (Array.isArray(inv.disks)) parts.push(`${inv.disks.length} disk${inv.disks.length === 1 ? '' : 's'}`);
  if (Array.isArray(inv.nics)) parts.push(`${inv.nics.length} NIC${inv.nics.length === 1 ? '' : 's'}`);
  if (inv.kernel?.release) parts.push(`kernel ${inv.kernel.release}`);
  if (inv.diskless) parts.push('diskless');
  return parts.join(' · ');
}

// ---- nodes -------------------------------------------------------------------------------------------

export function NodesPage() {
  const { data, error } = usePoll(async () => {
    const { nodes } = await api('/v1/nodes');
    // The list leaves inventories out (they can be large); each node's own page has it.
    const details = await Promise.all(nodes.slice(0, 100).map((n) => api(`/v1/nodes/${enc(n.id)}`).catch(() => null)));
    return nodes.map((n, i) => ({ ...n, inventory: details[i]?.inventory ?? null }));
  }, 3000);
  if (!data) return html`<${ErrorBox} error=${error} />${error ? null : html`<${Loading} what="nodes" />`}`;
  const groups = NODE_STATES.map((st) => [st, data.filter((n) => n.state === st)]).filter(([, ns]) => ns.length > 0);
  const other = data.filter((n) => !NODE_STATES.includes(n.state));
  if (other.length) groups.push(['other', other]);
  return html` <h1>Nodes <span class="count">${data.length}</span></h1>
    <${ErrorBox} error=${error} />
    <p class="summary">
      ${
        groups.length > 1 &&
        NODE_STATES.map((st) => {
          const n = data.filter((x) => x.state === st).length;
          return n ? html`<span class="pill"><${Badge} status=${st} /> ${n}</span> ` : null;
        })
      }
    </p>
    ${data.length === 0 ? html`<p class="muted">No node has registered yet. Start one with <code>writ runner</code> or <code>writ dev</code>.</p>` : null}
    ${groups.map(
      ([st, ns]) =>
        html` <section class="group" data-state=${st}>
          <h2><${Badge} status=${st} /> <span class="count">${ns.length}</span></h2>
          <table class="nodes">
            <thead>
              <tr>
                <th>Node</th>
                <th>Reachable</th>
                <th>Labels</th>
                <th>Inventory</th>
                <th>Version</th>
                <th>Last heartbeat</th>
                <th>In state since</th>
              </tr>
            </thead>
            <tbody>
              ${ns.map(
                (n) =>
                  html` <tr data-node=${n.id}>
                    <td>
                      <strong>${n.id}</strong
                      >${n.pool ? html`<div class="muted">pool ${n.pool}</div>` : null}${n.reason ? html`<div class="muted">${n.reason}</div>` : null}
                    </td>
                    <td>${n.reachable ? html`<span class="ok">yes</span>` : html`<span class="bad">no</span>`}</td>
                    <td><${Labels} labels=${n.labels} /></td>
                    <td class="inv">
                      ${inventoryLine(n.inventory) ?? html`<span class="muted">none reported</span>`}
                      ${
                        n.inventory
                          ? html`<details>
                              <summary>all</summary>
                              <${Json} value=${n.inventory} />
                            </details>`
                          : null
                      }
                    </td>
                    <td>${n.version || html`<span class="muted">?</span>`}</td>
                    <td class="heartbeat"><${Ago} iso=${n.lastHeartbeatAt} /></td>
                    <td><${Ago} iso=${n.stateSince} />${n.deadlineAt ? html`<div class="muted">deadline <${Ago} iso=${n.deadlineAt} /></div>` : null}</td>
                  </tr>`,
              )}
            </tbody>
          </table>
        </section>`,
    )}`;
}

// ---- jobs --------------------------------------------------------------------------------------------

export function JobsPage({ query, navigate }) {
  const status = query.get('status') ?? '';
  const node = query.get('node') ?? '';
  const [nodeInput, setNodeInput] = useState(node);
  const [pages, setPages] = useState(1);
  useEffect(() => setNodeInput(node), [node]);
  const { data, error } = usePoll(
    async () => {
      // The newest pages, re-read on each look so that new jobs and status changes show up.
      let jobs = [];
      let cursor = null;
      for (let i = 0; i < pages; i++) {
        const qs = new URLSearchParams({ limit: '50' });
        if (status) qs.set('status', status);
        if (node) qs.set('node', node);
        if (cursor) qs.set('cursor', cursor);
        const page = await api(`/v1/jobs?${qs}`);
        jobs = jobs.concat(page.jobs);
        cursor = page.nextCursor;
        if (!cursor) break;
      }
      return { jobs, more: Boolean(cursor) };
    },
    2000,
    [status, node, pages],
  );
  const setFilter = (k, v) => {
    const q = new URLSearchParams(query);
    if (v) q.set(k, v);
    else q.delete(k);
    const s = q.toString();
    navigate(`#/jobs${s ? `?${s}` : ''}`);
  };
  return html` <h1>Jobs</h1>
    <form
      class="filters"
      onSubmit=${(e) => {
        e.preventDefault();
        setFilter('node', nodeInput.trim());
      }}
    >
      <label
        >Status
        <select name="status" value=${status} onChange=${(e) => setFilter('status', e.currentTarget.value)}>
          <option value="">any</option>
          ${JOB_STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
        </select></label
      >
      <label>Node <input name="node" value=${nodeInput} placeholder="any" maxlength="63" onInput=${(e) => setNodeInput(e.currentTarget.value)} /></label>
      <button type="submit">Filter</button>
      ${status || node ? html`<a href="#/jobs" class="clear">clear filters</a>` : null}
    </form>
    <${ErrorBox} error=${error} />
    ${
      !data
        ? error
          ? null
          : html`<${Loading} what="jobs" />`
        : data.jobs.length === 0
          ? html`<p class="muted">No jobs${status || node ? ' match these filters' : ' yet'}.</p>`
          : html` <table class="jobs">
                <thead>
                  <tr>
                    <th>Job</th>
                    <th>Status</th>
                    <th>Node</th>
                    <th>Target</th>
                    <th>Attempts</th>
                    <th>Signers</th>
                    <th>Created</th>
                    <th>Error</th>
                  </tr>
                </thead>
                <tbody>
                  ${data.jobs.map(
                    (j) =>
                      html` <tr data-job=${j.id}>
                        <td><a href=${`#/jobs/${enc(j.id)}`}>${j.id}</a></td>
                        <td><${Badge} status=${j.status} /></td>
                        <td>${j.node ?? html`<span class="muted">–</span>`}</td>
                        <td class="muted">${targetText(j.target)}</td>
                        <td>${j.attempts}</td>
                        <td class="mono small">${(j.signers ?? []).join(', ')}</td>
                        <td><${Ago} iso=${j.createdAt} /></td>
                        <td>${j.error ? html`<span class="bad">${j.error.code}</span>` : null}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>
              ${data.more ? html`<button onClick=${() => setPages(pages + 1)}>Show more</button>` : null}`
    }`;
}

function targetText(t) {
  if (!t) return '';
  if (t.node) return `node ${t.node}`;
  if (t.selector)
    return Object.entries(t.selector)
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
  return JSON.stringify(t);
}

export function JobPage({ id }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  const [lines, setLines] = useState([]);
  const [stream, setStream] = useState('connecting');
  const load = useCallback(() => api(`/v1/jobs/${enc(id)}`).then((j) => (setJob(j), setError(null)), setError), [id]);
  useEffect(() => {
    setJob(null);
    setLines([]);
    void load();
    const ctl = new AbortController();
    void follow(`/v1/jobs/${enc(id)}/events`, {
      signal: ctl.signal,
      onState: (s) => setStream(typeof s === 'string' ? s : `error: ${s.code}`),
      onEvent: ({ data }) => {
        if (!data || typeof data !== 'object') return;
        setLines((ls) => (ls.some((l) => l.seq === data.seq) ? ls : [...ls, data]));
        if (data.type === 'status') void load();
      },
    });
    return () => ctl.abort();
  }, [id]);
  if (!job)
    return html`<h1>Job ${id}</h1>
      <${ErrorBox} error=${error} />${error ? null : html`<${Loading} what="the job" />`}`;
  return html` <p><a href="#/jobs">← all jobs</a></p>
    <h1>Job <span class="mono">${job.id}</span> <${Badge} status=${job.status} /></h1>
    <${ErrorBox} error=${error} />
    <dl class="facts">
      <dt>Node</dt>
      <dd>${job.node ?? '–'}</dd>
      <dt>Target</dt>
      <dd>${targetText(job.target)}</dd>
      <dt>Capabilities</dt>
      <dd>${(job.caps ?? []).length ? job.caps.map((c) => html`<span class="label">${c}</span> `) : html`<span class="muted">none</span>`}</dd>
      <dt>Signed by</dt>
      <dd class="mono small">${(job.signers ?? []).join(', ')}</dd>
      <dt>Created</dt>
      <dd><${Ago} iso=${job.createdAt} /></dd>
      <dt>Finished</dt>
      <dd>${job.finishedAt ? html`<${Ago} iso=${job.finishedAt} />` : html`<span class="muted">not yet</span>`}</dd>
    </dl>
    ${job.error ? html`<div class="error" role="alert"><strong>${job.error.code}</strong>: ${job.error.message}</div>` : null}
    <h2>Log <span class=${`stream stream-${stream.split(':')[0]}`} data-stream=${stream}>${stream === 'live' ? '● live' : stream}</span></h2>
    <ol class="log" data-lines=${lines.length}>
      ${
        lines.length === 0
          ? html`<li class="muted">No events yet.</li>`
          : lines.map(
              (l) =>
                html` <li class=${`ev ev-${l.type} lvl-${l.level ?? 'info'}`} data-seq=${l.seq}>
                  <span class="seq">${l.seq}</span>
                  <span class="kind">${l.type === 'log' ? (l.level ?? 'info') : l.type}</span>
                  <span class="msg">${l.message}</span>
                </li>`,
            )
      }
    </ol>
    <h2>Attempts <span class="count">${job.attempts}</span></h2>
    ${
      (job.attemptHistory ?? []).length === 0
        ? html`<p class="muted">Not dispatched yet.</p>`
        : html` <table class="attempts">
            <thead>
              <tr>
                <th>#</th>
                <th>Node</th>
                <th>Dispatched</th>
                <th>Started</th>
                <th>Finished</th>
                <th>Outcome</th>
              </tr>
            </thead>
            <tbody>
              ${job.attemptHistory.map(
                (a) =>
                  html` <tr>
                    <td>${a.attempt}</td>
                    <td>${a.node ?? '–'}</td>
                    <td><${Ago} iso=${a.dispatchedAt} /></td>
                    <td><${Ago} iso=${a.startedAt} /></td>
                    <td>${a.finishedAt ? html`<${Ago} iso=${a.finishedAt} />` : '–'}</td>
                    <td>${a.outcome ?? 'running'}${a.errorCode ? html` <span class="bad">${a.errorCode}</span>` : null}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }
    <h2>Result</h2>
    ${job.result === null || job.result === undefined ? html`<p class="muted">${TERMINAL.has(job.status) ? 'No result.' : 'Not finished yet.'}</p>` : html`<div class="result"><${Json} value=${job.result} /></div>`}`;
}

// ---- flows -------------------------------------------------------------------------------------------

export function FlowsPage({ query, navigate }) {
  const status = query.get('status') ?? '';
  const { data, error } = usePoll(() => api(`/v1/flows?limit=100${status ? `&status=${enc(status)}` : ''}`), 2000, [status]);
  return html` <h1>Flows</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label
        >Status
        <select name="status" value=${status} onChange=${(e) => navigate(`#/flows${e.currentTarget.value ? `?status=${enc(e.currentTarget.value)}` : ''}`)}>
          <option value="">any</option>
          ${FLOW_STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
        </select></label
      >
    </form>
    <${ErrorBox} error=${error} />
    ${
      !data
        ? error
          ? null
          : html`<${Loading} what="flows" />`
        : data.flows.length === 0
          ? html`<p class="muted">No flows${status ? ` ${status}` : ' yet'}. See docs/flows.md: <code>writ flow sign</code>, <code>writ flow run</code>.</p>`
          : html` <table class="flows">
              <thead>
                <tr>
                  <th>Flow</th>
                  <th>Status</th>
                  <th>Steps</th>
                  <th>Signers</th>
                  <th>Created</th>
                  <th>Finished</th>
                  <th>Error</th>
                </tr>
              </thead>
              <tbody>
                ${data.flows.map(
                  (f) =>
                    html` <tr data-flow=${f.id}>
                      <td><a href=${`#/flows/${enc(f.id)}`}>${f.id}</a></td>
                      <td><${Badge} status=${f.status} /></td>
                      <td>${f.steps}</td>
                      <td class="mono small">${(f.signers ?? []).join(', ')}</td>
                      <td><${Ago} iso=${f.createdAt} /></td>
                      <td>${f.finishedAt ? html`<${Ago} iso=${f.finishedAt} />` : '–'}</td>
                      <td>${f.error ? html`<span class="bad">${f.error.code}</span>` : null}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
    }`;
}

export function FlowPage({ id }) {
  const [flow, setFlow] = useState(null);
  const [error, setError] = useState(null);
  const [lines, setLines] = useState([]);
  const [stream, setStream] = useState('connecting');
  const pending = useRef(null);
  const load = useCallback(() => api(`/v1/flows/${enc(id)}`).then((f) => (setFlow(f), setError(null)), setError), [id]);
  useEffect(() => {
    setFlow(null);
    setLines([]);
    void load();
    const ctl = new AbortController();
    let n = 0;
    void follow(`/v1/flows/${enc(id)}/events`, {
      signal: ctl.signal,
      onState: (s) => {
        setStream(typeof s === 'string' ? s : `error: ${s.code}`);
        if (s === 'ended') void load();
      },
      onEvent: ({ event, data }) => {
        if (!data || typeof data !== 'object') return;
        const key = n++;
        setLines((ls) => [...ls, { key, event, ...data }].slice(-500));
        // Step and flow transitions change the picture: re-read the flow (at most every 250 ms).
        if (event !== 'log' && !pending.current) {
          pending.current = setTimeout(() => {
            pending.current = null;
            void load();
          }, 250);
        }
      },
    });
    return () => {
      ctl.abort();
      clearTimeout(pending.current);
      pending.current = null;
    };
  }, [id]);
  if (!flow)
    return html`<h1>Flow ${id}</h1>
      <${ErrorBox} error=${error} />${error ? null : html`<${Loading} what="the flow" />`}`;
  return html` <p><a href="#/flows">← all flows</a></p>
    <h1>Flow <span class="mono">${flow.id}</span> <${Badge} status=${flow.status} /></h1>
    <${ErrorBox} error=${error} />
    ${flow.error ? html`<div class="error" role="alert"><strong>${flow.error.code}</strong>: ${flow.error.message}</div>` : null}
    <dl class="facts">
      <dt>Steps</dt>
      <dd>${flow.steps}</dd>
      <dt>Signed by</dt>
      <dd class="mono small">${(flow.signers ?? []).join(', ')}</dd>
      <dt>Created</dt>
      <dd><${Ago} iso=${flow.createdAt} /></dd>
      <dt>Expires</dt>
      <dd><${Ago} iso=${flow.exp} /></dd>
      <dt>Finished</dt>
      <dd>${flow.finishedAt ? html`<${Ago} iso=${flow.finishedAt} />` : html`<span class="muted">not yet</span>`}</dd>
    </dl>
    <div class="dag-wrap"><${FlowDag} steps=${flow.stepList} /></div>
    <h2>Steps</h2>
    <table class="steps">
      <thead>
        <tr>
          <th>Step</th>
          <th>Status</th>
          <th>Depends on</th>
          <th>Nodes</th>
          <th>Jobs</th>
        </tr>
      </thead>
      <tbody>
        ${flow.stepList.map(
          (s) =>
            html` <tr data-step=${s.name}>
              <td><strong>${s.name}</strong>${s.error ? html`<div class="bad small">${s.error.code}: ${s.error.message}</div>` : null}</td>
              <td><${Badge} status=${s.status} /></td>
              <td>${(s.depends ?? []).join(', ') || html`<span class="muted">–</span>`}</td>
              <td>${(s.nodes ?? []).join(', ') || html`<span class="muted">–</span>`}</td>
              <td>
                ${(s.jobs ?? []).map((j) => html`<div><a href=${`#/jobs/${enc(j.id)}`}>${j.id}</a> <${Badge} status=${j.status} />${j.attempts > 1 ? html` <span class="muted">${j.attempts} attempts</span>` : null}</div>`)}
              </td>
            </tr>`,
        )}
      </tbody>
    </table>
    <h2>Events <span class=${`stream stream-${stream.split(':')[0]}`} data-stream=${stream}>${stream === 'live' ? '● live' : stream}</span></h2>
    <ol class="log">
      ${
        lines.length === 0
          ? html`<li class="muted">No events yet.</li>`
          : lines.map(
              (l) =>
                html` <li key=${l.key} class=${`ev ev-${l.event} lvl-${l.level ?? 'info'}`}>
                  <span class="kind">${l.event === 'log' ? `${l.step}@${l.node ?? '?'}` : l.event}</span>
                  <span class="msg"
                    >${l.event === 'log' ? `${l.level && l.level !== 'info' ? `${l.level}: ` : ''}${l.message}` : `${l.step ? `${l.step}: ` : ''}${l.message ?? l.type ?? ''}`}</span
                  >
                </li>`,
            )
      }
    </ol>`;
}

// ---- audit -------------------------------------------------------------------------------------------

export function AuditPage() {
  const [tail, setTail] = useState(100);
  const { data, error } = usePoll(() => api(`/v1/audit?tail=${tail}`), 3000, [tail]);
  const verify = usePoll(() => api('/v1/audit/verify'), 15000);
  const v = verify.data;
  return html` <h1>Audit log</h1>
    <div class=${`verify ${v ? (v.ok ? 'verify-ok' : 'verify-bad') : ''}`} data-verified=${v ? String(v.ok) : ''}>
      <span
        >${
          !v
            ? verify.error
              ? html`<${ErrorBox} error=${verify.error} />`
              : 'Verifying the hash chain…'
            : v.ok
              ? html`<strong>✔ Hash chain verified</strong>: ${v.count} entries, each linked to the one before; head at seq ${v.head.seq} (<span
                    class="mono small"
                    >${v.head.hash.slice(0, 16)}…</span
                  >).`
              : html`<strong>✘ Hash chain broken</strong> at entry ${v.firstBadSeq}: ${v.reason}. ${v.count} entries checked before it.`
        }</span
      >
      <button onClick=${verify.reload}>Verify again</button>
    </div>
    <${ErrorBox} error=${error} />
    <p class="filters">
      Newest
      <select value=${String(tail)} onChange=${(e) => setTail(Number(e.currentTarget.value))}>
        ${[50, 100, 500, 1000].map((n) => html`<option value=${String(n)}>${n}</option>`)}
      </select>
      entries, newest first
    </p>
    ${
      !data
        ? error
          ? null
          : html`<${Loading} what="the audit log" />`
        : html` <table class="audit">
            <thead>
              <tr>
                <th>Seq</th>
                <th>When</th>
                <th>Kind</th>
                <th>Actor</th>
                <th>Subject</th>
                <th>Data</th>
              </tr>
            </thead>
            <tbody>
              ${[...data.entries].reverse().map(
                (e) =>
                  html` <tr data-seq=${e.seq}>
                    <td>${e.seq}</td>
                    <td><${Ago} iso=${e.at} /></td>
                    <td><span class="label">${e.kind}</span></td>
                    <td class="mono small">${e.actor}</td>
                    <td class="mono small">${e.subject}</td>
                    <td class="mono small data">${e.data && Object.keys(e.data).length ? JSON.stringify(e.data) : ''}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}

// ---- key set -----------------------------------------------------------------------------------------

export function KeysetPage() {
  const { data, error } = usePoll(() => api('/v1/keyset'), 10000);
  const now = useNow();
  if (!data)
    return html`<h1>Key set</h1>
      <${ErrorBox} error=${error} />${error ? null : html`<${Loading} what="the key set" />`}`;
  const ks = data.keySet;
  const expiresMs = ks.expiresAt * 1000;
  const left = expiresMs - now;
  const expiry = left <= 0 ? 'expired' : left < 7 * 86400_000 ? 'soon' : 'fine';
  const keyOwner = new Map(ks.users.flatMap((u) => u.keys.map((k) => [k.keyid, u.name])));
  return html` <h1>Key set <span class="count">version ${ks.version}</span></h1>
    <${ErrorBox} error=${error} />
    <dl class="facts">
      <dt>Cluster</dt>
      <dd class="mono">${ks.cluster}</dd>
      <dt>Version</dt>
      <dd data-version=${ks.version}>${ks.version}</dd>
      <dt>Issued</dt>
      <dd><${Ago} iso=${new Date(ks.issuedAt * 1000).toISOString()} /></dd>
      <dt>Expires</dt>
      <dd class=${`expiry-${expiry}`}>
        ${new Date(expiresMs).toISOString()} (<${Ago}
          iso=${new Date(expiresMs).toISOString()}
        />)${expiry === 'soon' ? ' — publish the next version soon' : expiry === 'expired' ? ' — expired: nothing it allows is admitted' : ''}
      </dd>
      <dt>Admins</dt>
      <dd>
        ${ks.admins.threshold} of ${ks.admins.keys.length} must sign the next version:
        ${ks.admins.keys.map((k) => html`<span class="label mono">${k.keyid}${keyOwner.has(k.keyid) ? ` (${keyOwner.get(k.keyid)})` : ''}</span> `)}
      </dd>
    </dl>
    <h2>Users <span class="count">${ks.users.length}</span></h2>
    <table class="users">
      <thead>
        <tr>
          <th>User</th>
          <th>Keys</th>
          <th>Roles</th>
        </tr>
      </thead>
      <tbody>
        ${ks.users.map(
          (u) =>
            html` <tr data-user=${u.name}>
              <td><strong>${u.name}</strong></td>
              <td class="mono small">
                ${u.keys.map((k) => html`<div class=${ks.revoked.includes(k.keyid) ? 'revoked' : ''}>${k.keyid}${ks.revoked.includes(k.keyid) ? ' (revoked)' : ''}</div>`)}
              </td>
              <td>${u.roles.map((r) => html`<span class="label">${r}</span> `)}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    <h2>Roles <span class="count">${ks.roles.length}</span></h2>
    <table class="roles">
      <thead>
        <tr>
          <th>Role</th>
          <th>Capabilities</th>
          <th>Nodes</th>
          <th>Labels</th>
        </tr>
      </thead>
      <tbody>
        ${ks.roles.map(
          (r) =>
            html` <tr data-role=${r.name}>
              <td><strong>${r.name}</strong></td>
              <td>${r.caps.map((c) => html`<span class="label">${c}</span> `)}</td>
              <td>${r.nodes.map((n) => html`<span class="label">${n}</span> `)}</td>
              <td><${Labels} labels=${r.labels} /></td>
            </tr>`,
        )}
      </tbody>
    </table>
    <h2>Thresholds</h2>
    ${
      Object.keys(ks.thresholds).length === 0
        ? html`<p class="muted">None: every capability needs one signature.</p>`
        : html` <table class="thresholds">
            <thead>
              <tr>
                <th>Capability</th>
                <th>Distinct signers</th>
              </tr>
            </thead>
            <tbody>
              ${Object.entries(ks.thresholds).map(
                ([c, n]) =>
                  html`<tr>
                    <td><span class="label">${c}</span></td>
                    <td>${n}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }
    <h2>Revoked keys <span class="count">${ks.revoked.length}</span></h2>
    ${ks.revoked.length === 0 ? html`<p class="muted">None.</p>` : html`<p class="mono small">${ks.revoked.join(', ')}</p>`}
    ${
      ks.supervisors?.length
        ? html` <h2>Supervisors <span class="count">${ks.supervisors.length}</span></h2>
            <${Json} value=${ks.supervisors} />`
        : null
    }`;
}
