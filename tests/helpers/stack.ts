// Starts a real stack for integration tests: its own redis-server, PGlite in a temp dir, the coord on a
// free port, a supervisor and in-process runners. Every test file gets its own; nothing is shared.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startStack, type Stack, type StackOptions } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  b64url,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  encodeKeySet,
  generateKeyPair,
  nextKeySet,
  signEnvelope,
  type JobTarget,
  type KeyPair,
  type KeySet,
} from '@writ/protocol';

export interface TestStack extends Stack {
  admin: KeyPair;
  stateDir: string;
  sign(
    source: string,
    opts?: {
      target?: JobTarget;
      caps?: string[];
      id?: string;
      args?: unknown;
      timeoutMs?: number;
      memoryMiB?: number;
      keys?: KeyPair[];
      ttlS?: number;
      nowS?: number;
    },
  ): { envelope: string; id: string };
  post(envelope: string, token?: string): Promise<{ status: number; body: any }>;
  get(route: string): Promise<{ status: number; body: any }>;
  waitFor(id: string, statuses?: string[], timeoutMs?: number): Promise<any>;
  /** Publishes the next key set version with `edit` applied, signed by the admin (or `signers`). */
  amendKeySet(edit: (ks: KeySet) => void, signers?: KeyPair[]): Promise<string>;
  authorize(key: KeyPair, caps: string[], nodes?: string[], labels?: Record<string, string>): Promise<void>;
  revoke(key: KeyPair): Promise<void>;
  close(): Promise<void>;
}

export async function startTestStack(opts: Partial<StackOptions> = {}): Promise<TestStack> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'writ-it-'));
  // A suite can be run on another Redis (a Sentinel group, a Redis Cluster) by its variant file setting this.
  const redisUrl = opts.redisUrl ?? process.env.WRIT_TEST_REDIS_URL;
  const admin = opts.admin ?? generateKeyPair();
  const stack = await startStack({
    admin,
    stateDir,
    nodes: [{ id: 'node-a', labels: { rack: 'r1' } }],
    // A generous lock: the test process also runs the coord's PGlite on its event loop, which a loaded CI
    // machine can stall for seconds. Tests about locks start their own runner with a short one.
    runner: { lockDurationMs: 15_000, stalledIntervalMs: 2000, concurrency: 2, heartbeatMs: 1000 },
    supervisor: { attempts: 3, backoffMs: 200 },
    reconcileAfterMs: 800,
    reconcileEveryMs: 300,
    ...opts,
    ...(redisUrl ? { redisUrl } : {}),
  });
  let roleSeq = 0;
  const ts: TestStack = Object.assign(stack, {
    admin,
    stateDir,
    sign(source: string, o: Parameters<TestStack['sign']>[1] = {}) {
      const job = buildJobPayload({
        source,
        target: o.target ?? { node: 'node-a' },
        caps: o.caps ?? [],
        aud: stack.clusterId,
        args: (o.args ?? null) as never,
        limits: { timeoutMs: o.timeoutMs ?? 10_000, memoryMiB: o.memoryMiB ?? 64 },
        ...(o.id ? { id: o.id } : {}),
        ...(o.ttlS ? { ttlS: o.ttlS } : {}),
        ...(o.nowS ? { nowS: o.nowS } : {}),
      });
      return { envelope: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), o.keys ?? [admin])), id: job.id };
    },
    async post(envelope: string, token = stack.token) {
      const res = await fetch(`${stack.url}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: envelope,
      });
      return { status: res.status, body: await res.json() };
    },
    async get(route: string) {
      const res = await fetch(`${stack.url}${route}`, { headers: { authorization: `Bearer ${stack.token}` } });
      const text = await res.text();
      return { status: res.status, body: text.startsWith('{') ? JSON.parse(text) : text };
    },
    async waitFor(id: string, statuses = ['succeeded', 'failed', 'refused'], timeoutMs = 20_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const j = await stack.ledger.getJob(id);
        if (j && statuses.includes(j.status)) return j;
        if (Date.now() > end) throw new Error(`job ${id} did not reach ${statuses.join('|')} within ${timeoutMs} ms (now ${j?.status})`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async amendKeySet(edit: (ks: KeySet) => void, signers: KeyPair[] = [admin]) {
      const ks = nextKeySet(stack.service.currentKeySet()!.keySet, Math.floor(Date.now() / 1000));
      edit(ks);
      const raw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), signers));
      await stack.service.publishKeySet(raw, 'test');
      return raw;
    },
    async authorize(key: KeyPair, caps: string[], nodes = ['*'], labels: Record<string, string> = {}) {
      const role = `r${++roleSeq}`;
      await ts.amendKeySet((ks) => {
        ks.roles.push({ name: role, caps, nodes, labels });
        ks.users.push({ name: `u${roleSeq}`, keys: [{ keyid: key.keyid, publicKey: b64url(key.publicKey) }], roles: [role] });
      });
    },
    async revoke(key: KeyPair) {
      await ts.amendKeySet((ks) => {
        ks.revoked.push(key.keyid);
      });
    },
    async close() {
      await stack.stop();
      await rm(stateDir, { recursive: true, force: true });
    },
  });
  return ts;
}

export const HELLO = `export default async function (args, ctx) {
  ctx.log.info('hello ' + (args && args.name));
  const f = await ctx.sal.host.facts();
  ctx.log.info('threads ' + f.cpu.threads);
  return { hostname: f.hostname, threads: f.cpu.threads };
}`;
export const NOOP = 'export default async () => 1';
