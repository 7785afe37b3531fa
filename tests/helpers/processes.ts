// Writ services as real child processes (`writ coord|supervisor|runner ...`), for fault tests that signal,
// kill and restart them: each resolves once its `{"ready":true}` line is out; stderr is kept for assertions.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  b64url,
  bootstrapKeySet,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  encodeKeySet,
  encodePrivateKeyFile,
  encodePublicKeyFile,
  generateKeyPair,
  signEnvelope,
  type KeyPair,
} from '@writ/protocol';

export const WRIT_BIN = path.resolve(import.meta.dirname, '../../bin/writ.mjs');

export interface WritProcess {
  child: ChildProcess;
  ready: Record<string, unknown>;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal) and how long after `since` it came. */
  exited(since?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>;
}

const all: ChildProcess[] = [];

/**
 * Starts `writ ...args`; resolves at its ready line, rejects if it exits first (with its stderr). `nodeArgs`
 * go to Node itself (benches pass `--cpu-prof --cpu-prof-dir=DIR`, which NODE_OPTIONS does not allow).
 */
export function startWrit(args: string[], env: NodeJS.ProcessEnv, nodeArgs: readonly string[] = []): Promise<WritProcess> {
  const child = spawn(process.execPath, [...nodeArgs, WRIT_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WRIT_LOG_LEVEL: 'warn', ...env },
  });
  all.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += String(d)));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal, at: Date.now() })),
  );
  const proc = (ready: Record<string, unknown>): WritProcess => ({
    child,
    ready,
    stderr: () => err,
    exited: async (since = Date.now()) => {
      const e = await exit;
      return { code: e.code, signal: e.signal, afterMs: e.at - since };
    },
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += String(d);
      const line = out.split('\n').find((l) => l.includes('"ready":true'));
      if (line) resolve(proc(JSON.parse(line)));
    });
    void exit.then((e) => reject(new Error(`writ ${args[0]} exited before it was ready (${e.code ?? e.signal}): ${err.slice(-2000)}`)));
  });
}

/** Runs `writ ...args` to its end (a CLI command, not a service): its exit code and output. */
export function runWrit(
  args: string[],
  env: NodeJS.ProcessEnv,
  onStart?: (child: ChildProcess) => void,
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [WRIT_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WRIT_LOG_LEVEL: 'warn', ...env } });
  all.push(child);
  onStart?.(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 })));
}

/** For afterAll: SIGKILLs every process these helpers started that is still running. */
export function killAllWrit(): void {
  for (const c of all) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

/**
 * The production shape as processes (`writ supervisor`, `writ coord`, `writ runner`) around a Redis the test
 * owns: fixed ports, so a restarted coord comes back where clients expect it. Keys, tokens and state live in
 * `dir`.
 */
export interface ProcessCluster {
  coordUrl: string;
  token: string;
  admin: KeyPair;
  env: NodeJS.ProcessEnv;
  /** The cluster's supervisor; `as` starts another one (its own port and state) on the same Redis and coord. */
  startSupervisor(as?: { id: string; port: number }): Promise<WritProcess>;
  startCoord(): Promise<WritProcess>;
  startRunner(node: string, extra?: string[]): Promise<WritProcess>;
  /** Publishes key set v1 (the admin may do everything) through the coord. */
  publishKeySet(): Promise<void>;
  /** Waits for `node` to register, accepts it, and waits until it is active. */
  acceptNode(node: string): Promise<void>;
  api(method: string, route: string, body?: string): Promise<{ status: number; body: any }>;
  /** A signed job envelope for `node` with the admin key. */
  sign(source: string, node: string, caps?: string[]): { id: string; envelope: string };
  waitForJob(id: string, statuses: string[], timeoutMs?: number): Promise<any>;
}

export { freePort };

export async function processCluster(dir: string, redisUrl: string): Promise<ProcessCluster> {
  const admin = generateKeyPair();
  await writeFile(path.join(dir, 'admin.key'), encodePrivateKeyFile(admin), { mode: 0o600 });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
  const token = `test-api-token-${Math.random().toString(36).slice(2)}`;
  const env = { WRIT_HOME: dir, WRIT_TOKEN: token, WRIT_SUPERVISOR_TOKEN: `test-sup-token-${Math.random().toString(36).slice(2)}` };
  const coordPort = await freePort();
  const supPort = await freePort();
  const coordUrl = `http://127.0.0.1:${coordPort}`;
  const adminPub = path.join(dir, 'admin.pub');
  const api = async (method: string, route: string, body?: string) => {
    const r = await fetch(`${coordUrl}${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body } : {}),
    });
    const text = await r.text();
    return { status: r.status, body: text.startsWith('{') ? JSON.parse(text) : text };
  };
  return {
    coordUrl,
    token,
    admin,
    env,
    startSupervisor: (as) =>
      startWrit(
        [
          'supervisor',
          '--coord',
          coordUrl,
          '--redis',
          redisUrl,
          '--listen',
          `127.0.0.1:${as?.port ?? supPort}`,
          '--state',
          path.join(dir, as ? as.id : 'sup'),
          ...(as ? ['--id', as.id] : []),
          '--admin-key',
          adminPub,
        ],
        env,
      ),
    startCoord: () =>
      startWrit(
        [
          'coord',
          '--supervisor',
          `http://127.0.0.1:${supPort}`,
          '--supervisor-key',
          path.join(dir, 'sup', 'supervisor.key.pub'),
          '--listen',
          `127.0.0.1:${coordPort}`,
          '--state',
          path.join(dir, 'coord'),
          '--admin-key',
          adminPub,
        ],
        env,
      ),
    startRunner: (node, extra = []) =>
      startWrit(
        [
          'runner',
          '--node',
          node,
          '--coord',
          coordUrl,
          '--redis',
          redisUrl,
          '--admin-key',
          adminPub,
          '--state',
          path.join(dir, `runner-${node}`),
          '--heartbeat-ms',
          '500',
          ...extra,
        ],
        env,
      ),
    async publishKeySet() {
      const ks = bootstrapKeySet({
        cluster: 'writ-dev',
        admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) },
        nowS: Math.floor(Date.now() / 1000),
      });
      const res = await api('POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])));
      if (res.status !== 201 && res.status !== 200) throw new Error(`publishing the key set answered ${res.status}: ${JSON.stringify(res.body)}`);
    },
    async acceptNode(node) {
      const state = await until(
        `node ${node} registering`,
        async () => {
          const s = (await api('GET', `/v1/nodes/${node}`)).body?.state as string | undefined;
          return s === 'inspected' || s === 'active' ? s : undefined;
        },
        20_000,
      );
      if (state === 'inspected') {
        const res = await api('POST', `/v1/nodes/${node}/accept`, JSON.stringify({ reason: 'test' }));
        if (res.status >= 300) throw new Error(`accepting ${node} answered ${res.status}: ${JSON.stringify(res.body)}`);
      }
      await until(`node ${node} active`, async () => ((await api('GET', `/v1/nodes/${node}`)).body?.state === 'active' ? true : undefined), 20_000);
    },
    api,
    sign(source, node, caps = []) {
      const job = buildJobPayload({ source, target: { node }, caps, aud: 'writ-dev' });
      return { id: job.id, envelope: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])) };
    },
    waitForJob: (id, statuses, timeoutMs = 30_000) =>
      until(
        `job ${id} reaching ${statuses.join('|')}`,
        async () => {
          const view = (await api('GET', `/v1/jobs/${id}`)).body;
          return statuses.includes(view?.status) ? view : undefined;
        },
        timeoutMs,
      ),
  };
}

/** Polls `get` every 50 ms until it gives a value (errors count as none); throws "<what> within N ms" past the timeout. */
export async function until<T>(what: string, get: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
