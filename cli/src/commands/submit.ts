// writ submit ENVELOPE|SCRIPT [--key FILE] [--wait] [--follow] [--wait-timeout D]; writ submit --batch FILE...
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  MAX_BATCH_BYTES,
  MAX_BATCH_ENVELOPES,
  TERMINAL_STATUSES,
  WritError,
  errorCodeOf,
  parseBatchSubmitAnswer,
  parseEnvelope,
  parseJobView,
  parseSubmitAnswer,
  type BatchSubmitItem,
  type JobView,
} from '@writ/protocol';
import { humanDuration, parse, parseDurationS } from '../args.ts';
import { api, followEvents, requestUntilAnswered, resolveCoord, type CoordTarget, type OutageWatcher, type StreamedEvent } from '../client.ts';
import { keyringDir, loadPrivateKey } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { SIGN_OPTIONS, signScriptFile } from './sign.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ submit ENVELOPE.json|SCRIPT.js [--key FILE] [--target ...] [--caps ...] [--wait|--follow] [--wait-timeout D] [--coord URL] [--json]
       writ submit --batch FILE... [--wait] [--wait-timeout D] [--coord URL] [--json]

Submits a signed envelope to the coord. Given a .js script instead, signs it first (same options as
\`writ sign\`; --key defaults to $WRIT_HOME/keys/admin.key, which \`writ dev\` creates).

  --wait      wait until the job ends; exit 0 if it succeeded, 1 otherwise. A coord that restarts or is
              unreachable meanwhile is waited for (and asked again to take the job, which its id makes
              safe): the exit code is the job's, not the connection's
  --follow    stream the job's log lines and status changes until it ends (implies --wait)
  --wait-timeout D
              stop waiting D after submitting (30s, 10m, 2h; default: no limit): exit 1 with WAIT_TIMEOUT;
              the job itself goes on (see it with \`writ jobs show ID\`)
  --batch     submit signed envelopes from each FILE (one envelope, or one per line) in requests of up to
              ${MAX_BATCH_ENVELOPES} envelopes and ${MAX_BATCH_BYTES / 1024 / 1024} MiB: the coord records each request in one transaction. One line per envelope;
              exit 0 only if every envelope was accepted (and, with --wait, every job succeeded)
  --coord URL the coord (default $WRIT_COORD, or the one \`writ dev --keep\` recorded)

examples:
  writ submit scripts/examples/hello.js --target node=dev-1 --caps host.facts --follow
  writ submit --batch jobs/*.env.json --wait`;

const OPTIONS = {
  ...SIGN_OPTIONS,
  wait: { type: 'boolean', default: false },
  follow: { type: 'boolean', default: false },
  batch: { type: 'boolean', default: false },
  'wait-timeout': { type: 'string' },
  coord: { type: 'string' },
} as const;

/** How long --wait may take, from the submission on: a deadline shared by every job waited for, or none. */
export interface WaitLimit {
  /** Aborts at the deadline; undefined without --wait-timeout. */
  signal: AbortSignal | undefined;
  /** As the user gave it, for the message. */
  given: string;
}

function waitLimit(value: string | undefined): WaitLimit {
  if (value === undefined) return { signal: undefined, given: '' };
  const s = parseDurationS(value, '--wait-timeout');
  if (s <= 0) throw new WritError('USAGE', '--wait-timeout must be longer than 0s');
  return { signal: AbortSignal.timeout(s * 1000), given: humanDuration(s) };
}

function waitTimedOut(limit: WaitLimit, what: string, lastStatus: string | null, id: string | null): WritError {
  return new WritError(
    'WAIT_TIMEOUT',
    `${what} did not end within --wait-timeout ${limit.given}${lastStatus ? ` (last seen ${lastStatus})` : ''}; it goes on${id ? `: \`writ jobs show ${id}\`` : ''}`,
    { job: id, status: lastStatus },
  );
}

/** Tells the user once per outage that the coord is away and that the wait goes on. */
function outageNotices(io: Io, what: string): OutageWatcher {
  return {
    onOutage: (e) => io.err(`writ: the coord is not answering (${e.code}: ${e.message}); still waiting for ${what}`),
    onRecovered: () => io.err(`writ: the coord answers again; still waiting for ${what}`),
  };
}

/**
 * Submits while waiting: a coord that restarts (or drops the answer) is asked again until it answers, which
 * the job ids make safe (a repeat is answered as already recorded), within the wait's limit.
 */
async function submitWaiting(coord: CoordTarget, route: string, body: string, io: Io, limit: WaitLimit, what: string): Promise<unknown> {
  try {
    return await requestUntilAnswered<unknown>(coord, 'POST', route, body, limit.signal, outageNotices(io, `the coord to take ${what}`));
  } catch (e) {
    if (limit.signal?.aborted) throw waitTimedOut(limit, `the submission of ${what}`, null, null);
    throw e;
  }
}

export function printEvent(io: Io, e: StreamedEvent): void {
  const d = e.data;
  if (d.type === 'log') io.out(`[${(d.level ?? 'info').padEnd(5)}] ${d.message}`);
  else io.out(`[${d.type.padEnd(5)}] ${d.message}`);
}

interface NodeSeen {
  id: string;
  state: string;
  reachable: boolean;
  labels: Record<string, string>;
  lastHeartbeatAt: string | null;
}

function describeNode(n: NodeSeen, nowMs: number): string {
  const heard = n.lastHeartbeatAt ? `last heartbeat ${humanDuration((nowMs - Date.parse(n.lastHeartbeatAt)) / 1000)} ago` : 'never heard from';
  return `${n.id} is ${n.state}${n.reachable ? '' : `, unreachable (${heard})`}`;
}

/**
 * Why a job recorded `admitted` has no node yet, in words: its target node's state and liveness, or how many
 * nodes match its labels and why none takes work. Null when the coord cannot say (the wait goes on regardless).
 */
export async function explainWait(coord: CoordTarget, job: JobView): Promise<string | null> {
  const nowMs = Date.now();
  try {
    if ('node' in job.target) {
      const { status, body } = await api<NodeSeen>(coord, 'GET', `/v1/nodes/${encodeURIComponent(job.target.node)}`);
      if (status === 404) return `node ${job.target.node} is not registered with the coord`;
      if (status !== 200) return null;
      return `node ${describeNode(body, nowMs)}; the job waits until it is active and reachable (\`writ nodes show ${body.id}\`)`;
    }
    const selector = job.target.selector;
    const { status, body } = await api<{ nodes: NodeSeen[] }>(coord, 'GET', '/v1/nodes');
    if (status !== 200) return null;
    const labels = Object.entries(selector)
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    const matching = body.nodes.filter((n) => Object.entries(selector).every(([k, v]) => n.labels[k] === v));
    if (matching.length === 0) return `no node has the labels ${labels}; the job waits until one registers`;
    return `no active, reachable node has the labels ${labels} (${matching
      .slice(0, 5)
      .map((n) => describeNode(n, nowMs))
      .join('; ')}); the job waits until one is`;
  } catch {
    return null;
  }
}

/**
 * Waits until job `id` ends and returns its view. Connection failures and retryable answers (a coord
 * restarting) are waited out; past `limit` it throws WAIT_TIMEOUT, naming the job's last known status.
 */
export async function waitForJob(
  coord: CoordTarget,
  id: string,
  follow: boolean,
  io: Io,
  json: boolean,
  limit: WaitLimit = { signal: undefined, given: '' },
): Promise<JobView> {
  const { signal } = limit;
  const watch = outageNotices(io, `job ${id}`);
  let last: JobView | null = null;
  const getJob = async () =>
    (last = parseJobView(await requestUntilAnswered<unknown>(coord, 'GET', `/v1/jobs/${encodeURIComponent(id)}`, undefined, signal, watch)));
  try {
    if (follow) {
      await followEvents(coord, id, (e) => (json ? io.out(JSON.stringify(e.data)) : printEvent(io, e)), signal);
      signal?.throwIfAborted();
      return await getJob();
    }
    let told: string | null = null;
    let explainedAt = 0;
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      const j = await getJob();
      if (TERMINAL_STATUSES.has(j.status)) return j;
      // Waiting for a node (a job for a workable node is queued at admission): say why at once, and again
      // when the reason changes (looked at every 10 s, not on every poll).
      if (j.status === 'admitted' && Date.now() - explainedAt >= 10_000) {
        explainedAt = Date.now();
        const why = await explainWait(coord, j);
        const gist = why?.replace(/\d+[smhd]( \d+[smh])? ago/g, '');
        if (why && gist !== told) io.err(`writ: job ${id} is waiting for a node: ${why}`);
        told = gist ?? told;
      }
      await sleep(delay, undefined, signal ? { signal } : {});
    }
  } catch (e) {
    if (!signal?.aborted) throw e;
    throw waitTimedOut(limit, `job ${id}`, (last as JobView | null)?.status ?? null, id);
  }
}

/** Reads envelopes from files: a file holds one envelope (possibly pretty-printed) or one per line. */
async function readEnvelopes(files: string[]): Promise<{ source: string; envelope: string }[]> {
  const out: { source: string; envelope: string }[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = (await readFile(file, 'utf8')).trim();
    } catch (e) {
      throw new WritError('USAGE', `cannot read ${file} (${(e as NodeJS.ErrnoException).code})`);
    }
    const lines = text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
    const oneEach = lines.length > 1 && lines.every((l) => l.startsWith('{') && l.endsWith('}'));
    const pieces = oneEach ? lines.map((l, i) => ({ source: `${file}:${i + 1}`, envelope: l })) : [{ source: file, envelope: text }];
    for (const p of pieces) {
      // Checked here so that a malformed file is named with its line, not reported as a whole request refused.
      try {
        parseEnvelope(p.envelope);
      } catch (e) {
        throw new WritError('USAGE', `${p.source} is not a signed envelope: ${(e as Error).message}`);
      }
      out.push(p);
    }
  }
  if (out.length === 0) throw new WritError('USAGE', 'no envelopes to submit');
  return out;
}

async function submitBatch(
  files: string[],
  values: { wait?: boolean; json?: boolean; coord?: string; 'wait-timeout'?: string },
  io: Io,
  ctx: CliContext,
): Promise<number> {
  const items = await readEnvelopes(files);
  const coord = await resolveCoord(values.coord, ctx.env);
  const limit = waitLimit(values['wait-timeout']);
  const results: { source: string; answer: BatchSubmitItem }[] = [];
  // Requests of at most MAX_BATCH_ENVELOPES envelopes and MAX_BATCH_BYTES of body (with room for the wrapper).
  const chunks: (typeof items)[] = [];
  let bytes = 0;
  for (const it of items) {
    const size = Buffer.byteLength(it.envelope) + 1;
    const last = chunks.at(-1);
    if (!last || last.length >= MAX_BATCH_ENVELOPES || bytes + size > MAX_BATCH_BYTES - 1024) {
      chunks.push([it]);
      bytes = size;
    } else {
      last.push(it);
      bytes += size;
    }
  }
  for (const chunk of chunks) {
    const body = `{"envelopes":[${chunk.map((c) => c.envelope).join(',')}]}`;
    const answer = parseBatchSubmitAnswer(
      values.wait
        ? await submitWaiting(coord, '/v1/jobs:batch', body, io, limit, `${chunk.length} envelope(s)`)
        : (await api<unknown>(coord, 'POST', '/v1/jobs:batch', body)).body,
    );
    answer.results.forEach((a, k) => results.push({ source: chunk[k]!.source, answer: a }));
  }
  let ok = true;
  const jobs: JobView[] = [];
  for (const r of results) {
    if ('error' in r.answer) {
      ok = false;
      if (!values.json) io.err(`writ: ${r.source}${r.answer.id ? ` (job ${r.answer.id})` : ''}: ${r.answer.error.code}: ${r.answer.error.message}`);
    } else if (!values.json) {
      io.out(`job ${r.answer.id} ${r.answer.replayed ? 'was already recorded' : 'accepted'}: ${r.answer.status}${r.answer.node ? ` on ${r.answer.node}` : ''}`);
    }
  }
  if (values.wait) {
    for (const r of results) {
      if ('error' in r.answer) continue;
      const job = await waitForJob(coord, r.answer.id, false, io, values.json === true, limit);
      jobs.push(job);
      if (job.status !== 'succeeded') ok = false;
      if (!values.json) io.out(`job ${job.id} ${job.status}${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}`);
    }
  }
  if (values.json) printJson(io, { ok, results: results.map((r) => ({ source: r.source, ...r.answer })), ...(values.wait ? { jobs } : {}) });
  return ok ? EXIT.ok : EXIT.failure;
}

async function submit(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const batch = argv.includes('--batch');
  const { values, positionals } = parse(
    argv,
    OPTIONS,
    batch
      ? { min: 1, max: 100_000, usage: 'writ submit --batch FILE... [--wait]' }
      : { min: 1, max: 1, usage: 'writ submit ENVELOPE.json|SCRIPT.js [--follow]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  if (values['wait-timeout'] !== undefined && !values.wait && !values.follow)
    throw new WritError('USAGE', '--wait-timeout limits --wait or --follow; give one of them');
  waitLimit(values['wait-timeout']); // a bad duration is refused before anything is submitted
  if (values.batch) {
    if (values.follow) throw new WritError('USAGE', '--follow streams one job; with --batch use --wait\nusage: writ submit --batch FILE... [--wait]');
    if (positionals.some((f) => f.endsWith('.js') || f.endsWith('.mjs')))
      throw new WritError('USAGE', '--batch submits signed envelopes; sign scripts first with `writ sign SCRIPT --out FILE`');
    return submitBatch(positionals, values, io, ctx);
  }
  const file = positionals[0]!;
  // The cluster first: with none running, "start `writ dev`" is the hint that helps, not a missing key file.
  const coord = await resolveCoord(values.coord, ctx.env);
  let envelope: string;
  if (file.endsWith('.js') || file.endsWith('.mjs')) {
    const keyFiles = values.key?.length ? values.key : [path.join(keyringDir(ctx.env), 'admin.key')];
    const keys = await Promise.all(
      keyFiles.map(async (f) => {
        try {
          return await loadPrivateKey(f);
        } catch (e) {
          if (values.key?.length || errorCodeOf(e) !== 'KEY_FILE_NOT_FOUND') throw e;
          throw new WritError(
            'KEY_FILE_NOT_FOUND',
            `no --key given, and the default ${f} does not exist: pass --key FILE, or start \`writ dev --keep\`, which creates it`,
          );
        }
      }),
    );
    envelope = (await signScriptFile(file, keys, values, ctx)).envelope;
  } else {
    try {
      envelope = (await readFile(file, 'utf8')).trim();
    } catch (e) {
      throw new WritError('USAGE', `cannot read ${file} (${(e as NodeJS.ErrnoException).code})`);
    }
  }
  const limit = waitLimit(values['wait-timeout']);
  const accepted = parseSubmitAnswer(
    values.wait || values.follow
      ? await submitWaiting(coord, '/v1/jobs', envelope, io, limit, 'the job')
      : (await api<unknown>(coord, 'POST', '/v1/jobs', envelope)).body,
  );
  if (!values.json)
    io.out(`job ${accepted.id} ${accepted.replayed ? 'was already recorded' : 'accepted'}: ${accepted.status}${accepted.node ? ` on ${accepted.node}` : ''}`);
  if (!values.wait && !values.follow) {
    if (values.json) printJson(io, { ok: true, ...accepted });
    return EXIT.ok;
  }
  const job = await waitForJob(coord, accepted.id, values.follow === true, io, values.json === true, limit);
  if (values.json) printJson(io, { ok: job.status === 'succeeded', job });
  else if (job.status === 'succeeded') io.out(`job ${job.id} succeeded (attempts: ${job.attempts})\nresult: ${JSON.stringify(job.result, null, 2)}`);
  else io.err(`writ: job ${job.id} ${job.status}: ${job.error ? `${job.error.code}: ${job.error.message}` : 'no reason recorded'}`);
  return job.status === 'succeeded' ? EXIT.ok : EXIT.failure;
}

export const submitCommand: Command = { name: 'submit', summary: 'submit a signed envelope (or sign and submit a script)', help: HELP, run: submit };
