// Federation's trust rules, in one process (no Redis): which supervisors the key set lets exist, what the coord
// accepts of their signed heartbeats and reports, and when it marks one gone. The coord runs on an in-memory
// PGlite ledger and is driven through its HTTP app with inject(); its clock is the test's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, CoordService, openLedger, type Ledger } from '@writ/coord';
import {
  PAYLOAD_TYPES,
  SUPERVISOR_HEARTBEAT_PATH,
  b64url,
  bootstrapKeySet,
  encodeEnvelope,
  encodeKeySet,
  encodeSupervisorHeartbeat,
  encodeSupervisorReport,
  generateKeyPair,
  parseKeySet,
  signEnvelope,
  type KeyPair,
  type KeySet,
  type SupervisorHeartbeat,
  type SupervisorView,
} from '@writ/protocol';
import { supervisorConfig } from '@writ/supervisor';

const admin = generateKeyPair();
const supA = generateKeyPair();
const supB = generateKeyPair();
const stranger = generateKeyPair();
const ref = (kp: KeyPair) => ({ keyid: kp.keyid, publicKey: b64url(kp.publicKey) });
const TOKEN = 'federation-test-token';

let now = Date.now();
let ledger: Ledger;
let service: CoordService;
let app: Awaited<ReturnType<typeof buildApp>>;

function keySet(nowS: number): KeySet {
  return {
    ...bootstrapKeySet({ cluster: 'writ-dev', admin: ref(admin), nowS }),
    supervisors: [
      { id: 'sup-a', keys: [ref(supA)], pools: ['a'] },
      { id: 'sup-b', keys: [ref(supB)], pools: ['b', 'c'] },
    ],
  };
}

function heartbeat(kp: KeyPair, patch: Partial<SupervisorHeartbeat> = {}): string {
  const hb: SupervisorHeartbeat = {
    supervisor: 'sup-a',
    cluster: 'writ-dev',
    method: 'POST',
    path: SUPERVISOR_HEARTBEAT_PATH,
    apiUrl: 'http://127.0.0.1:9',
    pools: ['a'],
    queueDepth: 3,
    capacity: 2,
    redisOk: true,
    redisError: null,
    runnerRedis: 'redis://127.0.0.1:6390',
    intervalMs: 1000,
    ts: now,
    ...patch,
  };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.supervisorHeartbeat, encodeSupervisorHeartbeat(hb), [kp]));
}

const post = async (route: string, body: string) => {
  const r = await app.inject({ method: 'POST', url: route, headers: { 'content-type': 'application/json' }, payload: body });
  return { status: r.statusCode, body: r.json() as { error?: { code: string } } & Record<string, unknown> };
};
const list = async () =>
  (await app.inject({ method: 'GET', url: '/v1/supervisors', headers: { authorization: `Bearer ${TOKEN}` } })).json().supervisors as SupervisorView[];
const audits = async () => (await ledger.tailAudit(1000)) as { kind: string; actor: string; subject: string; data: Record<string, unknown> }[];

beforeAll(async () => {
  ledger = await openLedger({});
  service = new CoordService({
    clusterId: 'writ-dev',
    ledger,
    nodeStore: ledger.nodeStore,
    supervisorKeys: [],
    admins: { threshold: 1, keys: [ref(admin)] },
    clock: () => now,
    supervisorToken: 'x',
  });
  await service.start();
  app = await buildApp({ service, apiToken: TOKEN });
  await service.publishKeySet(encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(keySet(Math.floor(now / 1000))), [admin])), 'test');
}, 120_000);

afterAll(async () => {
  await app?.close();
  await service?.stop();
  await ledger?.close();
});

describe('the key set lists supervisors', () => {
  it('a key set without a supervisors section stays valid; one key for two supervisors, or a key id that is not its key, is refused', () => {
    const base = bootstrapKeySet({ cluster: 'writ-dev', admin: ref(admin), nowS: 1000 });
    expect(parseKeySet(encodeKeySet(base)).supervisors).toBeUndefined();
    expect(parseKeySet(encodeKeySet(keySet(1000))).supervisors?.map((s) => s.id)).toEqual(['sup-a', 'sup-b']);
    const twice = {
      ...base,
      supervisors: [
        { id: 's1', keys: [ref(supA)], pools: ['a'] },
        { id: 's2', keys: [ref(supA)], pools: ['b'] },
      ],
    };
    expect(() => parseKeySet(encodeKeySet(twice))).toThrow(/listed for supervisors s1 and s2/);
    const wrongId = { ...base, supervisors: [{ id: 's1', keys: [{ keyid: supB.keyid, publicKey: b64url(supA.publicKey) }], pools: ['a'] }] };
    expect(() => parseKeySet(encodeKeySet(wrongId))).toThrow(/does not match its public key/);
    const badPool = { ...base, supervisors: [{ id: 's1', keys: [ref(supA)], pools: ['Not A Pool'] }] };
    expect(() => parseKeySet(encodeKeySet(badPool))).toThrow(/key set/);
  });
});

describe('supervisor heartbeats', () => {
  it('a listed supervisor joins: recorded, audited, listed healthy with what it said', async () => {
    const r = await post('/v1/supervisors/heartbeat', heartbeat(supA));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ state: 'live', keySetVersion: 1 });
    const a = (await list()).find((s) => s.id === 'sup-a')!;
    expect(a).toMatchObject({
      state: 'live',
      healthy: true,
      listed: true,
      pinned: false,
      pools: ['a'],
      queueDepth: 3,
      capacity: 2,
      runnerRedis: 'redis://127.0.0.1:6390',
      keyid: supA.keyid,
    });
    expect((await audits()).some((e) => e.kind === 'supervisor.join' && e.subject === 'sup-a')).toBe(true);
  });

  it('refuses a key the key set does not list, a heartbeat naming another supervisor, and a pool not listed for it (SUPERVISOR_NOT_LISTED, audited)', async () => {
    now += 10;
    const unlisted = await post('/v1/supervisors/heartbeat', heartbeat(stranger, { supervisor: 'sup-x' }));
    expect([unlisted.status, unlisted.body.error?.code]).toEqual([403, 'SUPERVISOR_NOT_LISTED']);
    const impostor = await post('/v1/supervisors/heartbeat', heartbeat(supA, { supervisor: 'sup-b', pools: ['b'] }));
    expect([impostor.status, impostor.body.error?.code]).toEqual([403, 'SUPERVISOR_NOT_LISTED']);
    const greedy = await post('/v1/supervisors/heartbeat', heartbeat(supB, { supervisor: 'sup-b', pools: ['b', 'a'] }));
    expect([greedy.status, greedy.body.error?.code]).toEqual([403, 'SUPERVISOR_NOT_LISTED']);
    expect((await list()).map((s) => s.id)).toEqual(['sup-a']);
    const refused = (await audits()).filter((e) => e.kind === 'security' && e.data.code === 'SUPERVISOR_NOT_LISTED').map((e) => e.actor);
    expect(refused).toEqual(expect.arrayContaining([`supervisor-key:${stranger.keyid}`, `supervisor-key:${supA.keyid}`, `supervisor-key:${supB.keyid}`]));
  });

  it('refuses a replayed, a stale and another cluster’s heartbeat', async () => {
    now += 10;
    const fresh = heartbeat(supA);
    expect((await post('/v1/supervisors/heartbeat', fresh)).status).toBe(200);
    const replay = await post('/v1/supervisors/heartbeat', fresh);
    expect([replay.status, replay.body.error?.code]).toEqual([409, 'HEARTBEAT_REPLAYED']);
    const stale = await post('/v1/supervisors/heartbeat', heartbeat(supA, { ts: now - 120_000 }));
    expect([stale.status, stale.body.error?.code]).toEqual([400, 'HEARTBEAT_STALE']);
    const elsewhere = await post('/v1/supervisors/heartbeat', heartbeat(supA, { cluster: 'other', ts: now + 1 }));
    expect([elsewhere.status, elsewhere.body.error?.code]).toEqual([403, 'AUDIENCE_MISMATCH']);
  });

  it('marks a supervisor gone after three silent intervals (audited once), and back on its next heartbeat', async () => {
    now += 3 * 1000 - 50;
    await service.federation.sweep();
    expect((await list()).find((s) => s.id === 'sup-a')).toMatchObject({ state: 'live', healthy: true });
    now += 100;
    await service.federation.sweep();
    await service.federation.sweep();
    expect((await list()).find((s) => s.id === 'sup-a')).toMatchObject({ state: 'gone', healthy: false });
    expect((await audits()).filter((e) => e.kind === 'supervisor.gone' && e.subject === 'sup-a')).toHaveLength(1);
    expect((await post('/v1/supervisors/heartbeat', heartbeat(supA))).status).toBe(200);
    expect((await list()).find((s) => s.id === 'sup-a')).toMatchObject({ state: 'live', healthy: true });
    expect((await audits()).some((e) => e.kind === 'supervisor.return' && e.subject === 'sup-a')).toBe(true);
  });
});

describe('supervisor reports', () => {
  it('accepts a report only from a listed key, naming the supervisor that key is listed for', async () => {
    const report = (kp: KeyPair, supervisor: string) =>
      encodeEnvelope(signEnvelope(PAYLOAD_TYPES.result, encodeSupervisorReport({ supervisor, seq: `r-${supervisor}`, entries: [] }), [kp]));
    expect((await post('/v1/reports', report(supA, 'sup-a'))).status).toBe(200);
    const unlisted = await post('/v1/reports', report(stranger, 'sup-x'));
    expect([unlisted.status, unlisted.body.error?.code]).toEqual([403, 'SUPERVISOR_NOT_LISTED']);
    const impostor = await post('/v1/reports', report(supA, 'sup-b'));
    expect([impostor.status, impostor.body.error?.code]).toEqual([403, 'SUPERVISOR_NOT_LISTED']);
  });
});

describe('writ supervisor --pool (config)', () => {
  const given = { home: '/tmp/h', coord: 'http://127.0.0.1:7340', redis: 'redis://writ-supervisor:secret@127.0.0.1:6379/0', adminKeys: [ref(admin)] };
  const env = { WRIT_SUPERVISOR_TOKEN: 't' };
  it('without --pool it sends no heartbeats; with it, runners are told the Redis address without credentials', () => {
    expect(supervisorConfig(given, env).federation).toBeNull();
    expect(supervisorConfig({ ...given, pools: ['a', 'b'], heartbeatMs: '750' }, env).federation).toEqual({
      pools: ['a', 'b'],
      apiUrl: null,
      intervalMs: 750,
      runnerRedis: 'redis://127.0.0.1:6379/0',
    });
  });
  it('refuses a bad pool name, a pool named twice, and federation flags without --pool', () => {
    expect(() => supervisorConfig({ ...given, pools: ['Bad Pool'] }, env)).toThrow(/--pool Bad Pool/);
    expect(() => supervisorConfig({ ...given, pools: ['a', 'a'] }, env)).toThrow(/names a pool twice/);
    expect(() => supervisorConfig({ ...given, advertise: 'http://x:1' }, env)).toThrow(/--pool/);
  });
});
