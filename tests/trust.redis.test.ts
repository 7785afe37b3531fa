// Trust on the signed path: signed key sets (T6), distinct signers (T7), k-of-n for dangerous capabilities
// at admission and on the node (T8), revocation at execution (T9), and rollback/freeze of key sets.
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BULL_PREFIX,
  PAYLOAD_TYPES,
  encodeEnvelope,
  encodeKeySet,
  generateKeyPair,
  nextKeySet,
  queueJobId,
  queueNames,
  redisKeys,
  signEnvelope,
} from '@writ/protocol';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let redis: Redis;
const alice = generateKeyPair();
const bob = generateKeyPair();

beforeAll(async () => {
  s = await startTestStack();
  redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
  await s.amendKeySet((ks) => {
    ks.roles.push({ name: 'vm-ops', caps: ['vm.*', 'host.facts'], nodes: ['*'], labels: {} });
    ks.users.push({ name: 'alice', keys: [{ keyid: alice.keyid, publicKey: Buffer.from(alice.publicKey).toString('base64url') }], roles: ['vm-ops'] });
    ks.users.push({ name: 'bob', keys: [{ keyid: bob.keyid, publicKey: Buffer.from(bob.publicKey).toString('base64url') }], roles: ['vm-ops'] });
    ks.thresholds['vm.delete'] = 2;
  });
}, 60_000);
afterAll(async () => {
  redis?.disconnect();
  await s?.close();
});

async function inject(node: string, jobId: string, envelope: string) {
  const q = new Queue(queueNames.node(node), { connection: redis, prefix: BULL_PREFIX });
  await q.add('job', { envelope, attempt: 1 }, { jobId: queueJobId(jobId, 1), attempts: 1 });
  await q.close();
}
async function securityEvent(pred: (e: { subject: string; data: any }) => boolean, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const hit = ((await s.ledger.tailAudit(500)) as { kind: string; subject: string; data: any }[]).find((e) => e.kind === 'security' && pred(e));
    if (hit) return hit;
    if (Date.now() > end) throw new Error('no matching security event');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('k-of-n for dangerous capabilities (T7, T8)', () => {
  it('one signature on a dangerous capability is refused at admission; two distinct signers pass', async () => {
    const one = s.sign(NOOP, { caps: ['vm.delete'], keys: [alice] });
    const r1 = await s.post(one.envelope);
    expect([r1.status, r1.body.error.code]).toEqual([403, 'THRESHOLD_NOT_MET']);
    const twice = s.sign(NOOP, { caps: ['vm.delete'], keys: [alice, alice] });
    const r2 = await s.post(twice.envelope);
    expect([r2.status, r2.body.error.code]).toEqual([403, 'THRESHOLD_NOT_MET']);
    const two = s.sign(NOOP, { caps: ['vm.delete'], keys: [alice, bob] });
    expect((await s.post(two.envelope)).status).toBe(202);
    expect((await s.waitFor(two.id)).status).toBe('succeeded');
  });

  it('one signature on a dangerous capability is refused again on the node when forced into Redis', async () => {
    const one = s.sign(NOOP, { caps: ['vm.delete'], keys: [alice] });
    await inject('node-a', one.id, one.envelope);
    expect((await securityEvent((e) => e.subject === one.id)).data.error.code).toBe('THRESHOLD_NOT_MET');
  });
});

describe('key sets on the node (T6)', () => {
  it('a runner refuses an older key set written into Redis (rollback) and keeps the newer one', async () => {
    const current = s.service.currentKeySet()!;
    // A genuinely signed but older version: what an attacker who recorded it could replay.
    const old = nextKeySet({ ...current.keySet, version: current.version - 2 }, Math.floor(Date.now() / 1000));
    const oldRaw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(old), [s.admin]));
    await redis.multi().set(redisKeys.keySet(), oldRaw).incr(redisKeys.keySetVersion()).exec();
    const job = s.sign(NOOP, { keys: [alice], caps: ['host.facts'] });
    expect((await s.post(job.envelope)).status).toBe(202);
    expect((await s.waitFor(job.id)).status).toBe('succeeded'); // still runs under the newer set it holds
    const ev = await securityEvent((e) => e.data?.error?.code === 'KEYSET_ROLLBACK');
    expect(ev.data.error.message).toMatch(/not newer/);
    expect(s.runners[0]!.keySets.version).toBe(current.version);
  });

  it('a key set signed by a non-admin is refused by the coord', async () => {
    const ks = nextKeySet(s.service.currentKeySet()!.keySet, Math.floor(Date.now() / 1000));
    const raw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [alice]));
    const res = await fetch(`${s.url}/v1/keyset`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: raw,
    });
    expect([res.status, ((await res.json()) as any).error.code]).toEqual([400, 'KEYSET_INVALID']);
  });

  it('revocation reaches jobs already queued: they fail with KEY_REVOKED and run nothing (T9)', async () => {
    const carol = generateKeyPair();
    await s.authorize(carol, ['time.sleep', 'host.facts'], ['node-a']);
    // pause() without doNotWaitActive also ends the worker's blocking fetch: with pause(true) a fetch already
    // in flight could still take the job before the revocation below, and the test would see it succeed.
    await s.runners[0]!.bullWorker.pause();
    const job = s.sign('export default async (a, ctx) => { ctx.log.info("EFFECT"); return 1 }', { keys: [carol] });
    expect((await s.post(job.envelope)).status).toBe(202);
    await s.revoke(carol);
    await s.runners[0]!.bullWorker.resume();
    expect(await s.waitFor(job.id)).toMatchObject({ status: 'failed', errorCode: 'KEY_REVOKED' });
    const logs = (await s.ledger.listJobEvents(job.id, 0, 100)).filter((e: { type: string }) => e.type === 'log');
    expect(logs).toHaveLength(0);
  });

  it('an expired key set freezes admission (KEYSET_EXPIRED) until a fresh one is published', async () => {
    await s.amendKeySet((ks) => {
      ks.expiresAt = ks.issuedAt + 2;
    });
    await new Promise((r) => setTimeout(r, 2500));
    const job = s.sign(NOOP);
    const r = await s.post(job.envelope);
    expect([r.status, r.body.error.code]).toEqual([409, 'KEYSET_EXPIRED']);
    // Recovery: admins publish a newer, valid set (signed while the old one is expired).
    await s.amendKeySet(() => {});
    const ok = s.sign(NOOP);
    expect((await s.post(ok.envelope)).status).toBe(202);
    expect((await s.waitFor(ok.id)).status).toBe('succeeded');
  });
});
