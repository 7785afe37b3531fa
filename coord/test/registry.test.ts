// Node registration, heartbeats and lifecycle against a real ledger (PGlite in memory) with a controllable
// clock, using real signatures. Requirements: T13 (proof of possession), replay and staleness, deadlines.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  HEARTBEAT_PATH,
  PAYLOAD_TYPES,
  REGISTER_PATH,
  b64url,
  canonicalJson,
  encodeEnvelope,
  errorCodeOf,
  generateKeyPair,
  sha256Hex,
  signEnvelope,
  utf8,
  type Heartbeat,
  type KeyPair,
  type NodeRegistration,
} from '@writ/protocol';
import { openLedger, type Ledger } from '../src/ledger/index.ts';
import { NodeRegistry } from '../src/nodes/registry.ts';

let ledger: Ledger;
let now = 1_800_000_000_000;
let reg: NodeRegistry;
let seq = 0;
const HB = 1000;

beforeAll(async () => {
  ledger = await openLedger({});
});
afterAll(async () => {
  await ledger?.close();
});
beforeEach(() => {
  reg = new NodeRegistry({ store: ledger.nodeStore, clock: () => now, heartbeatMs: HB, deadlinesMs: { 'install-pending': 10_000, draining: 60_000 } });
});

const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e) => errorCodeOf(e) ?? String(e),
  );
const inventory = { cpu: 2 };

function registration(key: KeyPair, nodeId: string, challenge: string, over: Partial<NodeRegistration> = {}): string {
  const p: NodeRegistration = {
    nodeId,
    publicKey: b64url(key.publicKey),
    challenge,
    method: 'POST',
    path: REGISTER_PATH,
    inventorySha256: sha256Hex(canonicalJson(inventory)),
    inventory,
    labels: {},
    version: 't',
    iat: Math.floor(now / 1000),
    ...over,
  };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.nodeRegistration, utf8.encode(JSON.stringify(p)), [key]));
}
function heartbeat(key: KeyPair, nodeId: string, over: Partial<Heartbeat> = {}): string {
  const hb: Heartbeat = {
    nodeId,
    method: 'POST',
    path: HEARTBEAT_PATH,
    seq: ++seq,
    ts: now,
    health: { healthy: true, problems: [], load1: 0, memAvailableBytes: 1, diskFreeBytes: 1, runningJobs: 0 },
    ...over,
  };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.heartbeat, utf8.encode(JSON.stringify(hb)), [key]));
}
async function enrol(nodeId: string): Promise<KeyPair> {
  const key = generateKeyPair();
  const { challenge } = await reg.challenge(nodeId, b64url(key.publicKey));
  await reg.register(registration(key, nodeId, challenge));
  return key;
}

describe('registration (T13)', () => {
  it('registers a node that signs the fresh challenge, as inspected', async () => {
    await enrol('n-ok');
    expect((await ledger.nodeStore.getNode('n-ok'))?.state).toBe('inspected');
    expect((await ledger.nodeStore.listTransitions('n-ok')).map((t) => t.to)).toEqual(['discovered', 'inspected']);
  });

  it('refuses a registration without a challenge, with another challenge, or replayed', async () => {
    const key = generateKeyPair();
    expect(await codeOf(reg.register(registration(key, 'n-x', 'A'.repeat(43))))).toBe('CHALLENGE_INVALID');
    const { challenge } = await reg.challenge('n-x', b64url(key.publicKey));
    expect(await codeOf(reg.register(registration(key, 'n-x', 'B'.repeat(43))))).toBe('CHALLENGE_INVALID');
    // The failed attempt consumed the challenge: a correct registration now needs a new one.
    expect(await codeOf(reg.register(registration(key, 'n-x', challenge)))).toBe('CHALLENGE_INVALID');
    const second = await reg.challenge('n-x', b64url(key.publicKey));
    const good = registration(key, 'n-x', second.challenge);
    expect(await codeOf(reg.register(good))).toBe('OK');
    expect(await codeOf(reg.register(good))).toBe('CHALLENGE_INVALID');
  });

  it('refuses a registration signed by another key than the challenge was issued for', async () => {
    const key = generateKeyPair();
    const thief = generateKeyPair();
    const { challenge } = await reg.challenge('n-t', b64url(key.publicKey));
    // The thief signs, claiming the victim's key id as hint.
    const env = JSON.parse(registration(thief, 'n-t', challenge, { publicKey: b64url(key.publicKey) }));
    env.signatures[0].keyid = key.keyid;
    expect(await codeOf(reg.register(JSON.stringify(env)))).toMatch(/SIGNATURE_INVALID|UNKNOWN_KEY/);
  });

  it('forgets expired challenges at the next sweep', async () => {
    for (let i = 0; i < 5; i++) await reg.challenge(`n-spam-${i}`, b64url(generateKeyPair().publicKey));
    const count = async () => Number((await ledger.db.query<{ n: string }>('SELECT count(*) AS n FROM node_challenges'))[0]!.n);
    expect(await count()).toBeGreaterThanOrEqual(5);
    now += 61_000;
    await reg.sweep();
    expect(await count()).toBe(0);
  });

  it('refuses an expired challenge and a registration bound to another path', async () => {
    const key = generateKeyPair();
    const c1 = await reg.challenge('n-e', b64url(key.publicKey));
    now += 61_000;
    expect(await codeOf(reg.register(registration(key, 'n-e', c1.challenge)))).toBe('CHALLENGE_INVALID');
    const c2 = await reg.challenge('n-e', b64url(key.publicKey));
    expect(await codeOf(reg.register(registration(key, 'n-e', c2.challenge, { path: '/v1/other' as typeof REGISTER_PATH })))).toBe('SCHEMA_INVALID');
  });

  it('a known node cannot enrol a new key until an operator rekeys it', async () => {
    await enrol('n-k');
    const other = generateKeyPair();
    expect(await codeOf(reg.challenge('n-k', b64url(other.publicKey)))).toBe('NODE_KEY_MISMATCH');
    await reg.rekey('n-k', 'op', 'seed lost');
    const { challenge } = await reg.challenge('n-k', b64url(other.publicKey));
    expect(await codeOf(reg.register(registration(other, 'n-k', challenge)))).toBe('OK');
    expect((await ledger.nodeStore.getNode('n-k'))?.keyid).toBe(other.keyid);
  });
});

describe('heartbeats', () => {
  it('refuses a replayed heartbeat and one off our clock', async () => {
    const key = await enrol('n-hb');
    const hb = heartbeat(key, 'n-hb');
    expect(await codeOf(reg.heartbeat(hb))).toBe('OK');
    expect(await codeOf(reg.heartbeat(hb))).toBe('HEARTBEAT_REPLAYED');
    expect(await codeOf(reg.heartbeat(heartbeat(key, 'n-hb', { ts: now - 120_000 })))).toBe('HEARTBEAT_STALE');
    expect(await codeOf(reg.heartbeat(heartbeat(key, 'n-hb', { ts: now + 120_000 })))).toBe('HEARTBEAT_STALE');
    expect(await codeOf(reg.heartbeat(heartbeat(generateKeyPair(), 'n-hb')))).toBe('NODE_NOT_FOUND');
  });

  it('records an unhealthy heartbeat with its health (sick, not silent)', async () => {
    const key = await enrol('n-sick');
    await reg.heartbeat(
      heartbeat(key, 'n-sick', { health: { healthy: false, problems: ['disk full'], load1: 9, memAvailableBytes: 1, diskFreeBytes: 0, runningJobs: 0 } }),
    );
    const n = (await reg.getNode('n-sick'))!;
    expect(n.health).toMatchObject({ healthy: false, problems: ['disk full'] });
    expect(reg.reachable(n)).toBe(true);
  });
});

describe('lifecycle with a controllable clock', () => {
  it('gets work only after an operator accept and a healthy heartbeat; stale heartbeats make it unreachable', async () => {
    const key = await enrol('n-w');
    await reg.heartbeat(heartbeat(key, 'n-w'));
    expect((await reg.workable()).map((n) => n.id)).not.toContain('n-w');
    await reg.apply('n-w', 'accept', { actor: 'op', reason: 't', byOperator: true });
    expect((await reg.workable()).map((n) => n.id)).not.toContain('n-w');
    await reg.heartbeat(heartbeat(key, 'n-w'));
    expect((await ledger.nodeStore.getNode('n-w'))?.state).toBe('active');
    expect((await reg.workable()).map((n) => n.id)).toContain('n-w');
    now += 3 * HB + 1;
    expect((await reg.workable()).map((n) => n.id)).not.toContain('n-w');
    await reg.heartbeat(heartbeat(key, 'n-w'));
    expect((await reg.workable()).map((n) => n.id)).toContain('n-w');
  });

  it('a drained node gets no work and becomes commissioned once empty', async () => {
    const key = await enrol('n-d');
    await reg.apply('n-d', 'accept', { actor: 'op', reason: 't', byOperator: true });
    await reg.heartbeat(heartbeat(key, 'n-d'));
    await reg.apply('n-d', 'drain', { actor: 'op', reason: 't', byOperator: true });
    expect((await reg.workable()).map((n) => n.id)).not.toContain('n-d');
    await reg.heartbeat(heartbeat(key, 'n-d', { health: { healthy: true, problems: [], load1: 0, memAvailableBytes: 1, diskFreeBytes: 1, runningJobs: 2 } }));
    expect((await ledger.nodeStore.getNode('n-d'))?.state).toBe('draining');
    await reg.heartbeat(heartbeat(key, 'n-d'));
    expect((await ledger.nodeStore.getNode('n-d'))?.state).toBe('commissioned');
  });

  it('an in-progress state fails at its deadline, and a draining node whose runner went silent fails', async () => {
    const key = await enrol('n-f');
    await reg.apply('n-f', 'accept', { actor: 'op', reason: 't', byOperator: true });
    await reg.apply('n-f', 'install', { actor: 'op', reason: 't', byOperator: true });
    await reg.sweep();
    expect((await ledger.nodeStore.getNode('n-f'))?.state).toBe('install-pending');
    now += 10_001;
    await reg.sweep();
    const n = (await ledger.nodeStore.getNode('n-f'))!;
    expect(n.state).toBe('failed');
    expect(n.reason).toMatch(/past its deadline/);
    // A failed node stays failed: a healthy heartbeat does not put it back into the pool.
    await reg.heartbeat(heartbeat(key, 'n-f'));
    expect((await ledger.nodeStore.getNode('n-f'))?.state).toBe('failed');

    const k2 = await enrol('n-g');
    await reg.apply('n-g', 'accept', { actor: 'op', reason: 't', byOperator: true });
    await reg.heartbeat(heartbeat(k2, 'n-g'));
    await reg.apply('n-g', 'drain', { actor: 'op', reason: 't', byOperator: true });
    now += 3 * HB + 1;
    await reg.sweep();
    expect(await ledger.nodeStore.getNode('n-g')).toMatchObject({ state: 'failed', reason: expect.stringMatching(/no heartbeat/) });
  });

  it('a node whose runner dies while reprovisioning fails; one that never heartbeated there waits for its deadline', async () => {
    const key = await enrol('n-r');
    await reg.apply('n-r', 'accept', { actor: 'op', reason: 't', byOperator: true });
    await reg.apply('n-r', 'reprovision', { actor: 'op', reason: 't', byOperator: true });
    now += 3 * HB + 1;
    await reg.sweep();
    expect((await ledger.nodeStore.getNode('n-r'))?.state).toBe('reprovisioning');
    await reg.heartbeat(heartbeat(key, 'n-r'));
    now += 3 * HB + 1;
    await reg.sweep();
    expect(await ledger.nodeStore.getNode('n-r')).toMatchObject({ state: 'failed', reason: expect.stringMatching(/no heartbeat/) });
  });

  it('records every transition with actor, reason and time', async () => {
    const t = await ledger.nodeStore.listTransitions('n-f');
    expect(t.map((x) => `${x.from}->${x.to}:${x.actor}`)).toEqual([
      'null->discovered:node:n-f',
      'discovered->inspected:node:n-f',
      'inspected->commissioned:op',
      'commissioned->install-pending:op',
      'install-pending->failed:coord',
    ]);
    expect(t.every((x) => typeof x.at === 'number' && x.reason.length > 0)).toBe(true);
  });
});
