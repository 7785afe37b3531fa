// Liveness in memory (issue 8): heartbeats are checked against memory and the node's cached key, reach the
// ledger in one batched statement, survive a restart, and the sweep and workable() answer without reading
// the ledger. Real PGlite in memory, real signatures, a controllable clock; every statement is counted.
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
import { openLedger, type Db, type Ledger, type Queryable } from '../src/ledger/index.ts';
import { NodeRegistry } from '../src/nodes/registry.ts';
import { SqlNodeStore } from '../src/nodes/sql-store.ts';

let ledger: Ledger;
let now = 1_800_000_000_000;
let seq = 0;
const HB = 1000;
const FLUSH = 5000;
/** Every statement the registry under test sent to the ledger, in order. */
let statements: string[] = [];

/** The ledger's Db, recording each statement (inside transactions too) before running it. */
function countingDb(db: Db): Db {
  const wrap = (q: Queryable): Queryable => ({
    query<T>(sql: string, params?: readonly unknown[]) {
      statements.push(sql);
      return q.query<T>(sql, params);
    },
    exec: (script) => q.exec(script),
  });
  return { engine: db.engine, health: db.health, ...wrap(db), transaction: (fn) => db.transaction((tx) => fn(wrap(tx))), close: () => db.close() };
}

const newRegistry = () =>
  new NodeRegistry({
    store: new SqlNodeStore(countingDb(ledger.db)),
    clock: () => now,
    heartbeatMs: HB,
    flushEveryMs: FLUSH,
    deadlinesMs: { draining: 60_000 },
  });
const readsOfNodes = () => statements.filter((sql) => /\bSELECT\b[\s\S]*\bFROM\s+nodes\b/i.test(sql));
const writesOfNodes = () => statements.filter((sql) => /\bUPDATE\s+nodes\b/i.test(sql));
const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e) => errorCodeOf(e) ?? String(e),
  );

let reg: NodeRegistry;
beforeAll(async () => {
  ledger = await openLedger({});
});
afterAll(async () => {
  await ledger?.close();
});
beforeEach(async () => {
  reg = newRegistry();
  await reg.start();
  statements = [];
});

function registration(key: KeyPair, nodeId: string, challenge: string): string {
  const inventory = { cpu: 2 };
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
async function enrol(r: NodeRegistry, nodeId: string, key = generateKeyPair()): Promise<KeyPair> {
  const { challenge } = await r.challenge(nodeId, b64url(key.publicKey));
  await r.register(registration(key, nodeId, challenge));
  return key;
}
const operator = { actor: 'op', reason: 't', byOperator: true };

describe('heartbeats in memory', () => {
  it('a heartbeat updates liveness without any ledger statement', async () => {
    const key = await enrol(reg, 'lv-mem');
    statements = [];
    for (let i = 0; i < 5; i++) expect(await codeOf(reg.heartbeat(heartbeat(key, 'lv-mem')))).toBe('OK');
    expect(statements).toEqual([]);
    expect(await reg.getNode('lv-mem')).toMatchObject({ lastSeq: seq, lastHeartbeatAt: now });
    // The ledger has not seen them yet: that is what the flush is for.
    expect((await ledger.nodeStore.getNode('lv-mem'))?.lastSeq).toBe(0);
  });

  it('the flush writes every pending heartbeat in one statement, and a new registry on the same ledger sees them', async () => {
    const keys = [await enrol(reg, 'lv-f1'), await enrol(reg, 'lv-f2'), await enrol(reg, 'lv-f3')];
    for (const [i, key] of keys.entries())
      await reg.heartbeat(
        heartbeat(key, `lv-f${i + 1}`, {
          health: { healthy: i !== 1, problems: i === 1 ? ['disk full'] : [], load1: i, memAvailableBytes: 1, diskFreeBytes: 1, runningJobs: 0 },
        }),
      );
    const seqs = await Promise.all(['lv-f1', 'lv-f2', 'lv-f3'].map(async (id) => (await reg.getNode(id))!.lastSeq));
    statements = [];
    expect(await reg.flush()).toBe(3);
    expect(statements).toHaveLength(1);
    expect(writesOfNodes()).toHaveLength(1);
    expect(await reg.flush()).toBe(0); // nothing new: nothing written

    const restarted = newRegistry();
    for (const [i, id] of ['lv-f1', 'lv-f2', 'lv-f3'].entries()) {
      expect(await ledger.nodeStore.getNode(id)).toMatchObject({ lastSeq: seqs[i], lastHeartbeatAt: now });
      expect(await restarted.getNode(id)).toMatchObject({ lastSeq: seqs[i], lastHeartbeatAt: now });
    }
    expect((await restarted.getNode('lv-f2'))?.health).toMatchObject({ healthy: false, problems: ['disk full'] });
    expect(restarted.reachable({ id: 'lv-f1', lastHeartbeatAt: null })).toBe(true);
  });

  it('the sweep flushes once flushEveryMs has passed, and stop() flushes what is left', async () => {
    const key = await enrol(reg, 'lv-sweep');
    await reg.heartbeat(heartbeat(key, 'lv-sweep'));
    await reg.sweep();
    expect(writesOfNodes().filter((sql) => /last_seq/.test(sql))).toEqual([]);
    now += FLUSH;
    await reg.sweep();
    expect((await ledger.nodeStore.getNode('lv-sweep'))?.lastSeq).toBe(seq);
    await reg.heartbeat(heartbeat(key, 'lv-sweep'));
    await reg.stop();
    expect((await ledger.nodeStore.getNode('lv-sweep'))?.lastSeq).toBe(seq);
  });

  it('refuses a replayed sequence number, before and after a restart once flushed', async () => {
    const key = await enrol(reg, 'lv-replay');
    const hb = heartbeat(key, 'lv-replay');
    expect(await codeOf(reg.heartbeat(hb))).toBe('OK');
    expect(await codeOf(reg.heartbeat(hb))).toBe('HEARTBEAT_REPLAYED');
    // Signed later but numbered lower: the number decides.
    expect(await codeOf(reg.heartbeat(heartbeat(key, 'lv-replay', { seq: seq - 1 })))).toBe('HEARTBEAT_REPLAYED');
    await reg.flush();
    expect(await codeOf(newRegistry().heartbeat(hb))).toBe('HEARTBEAT_REPLAYED');
  });

  it('after a restart, a heartbeat the ledger had not seen yet can be replayed only within the clock-skew window', async () => {
    const key = await enrol(reg, 'lv-lag');
    await reg.heartbeat(heartbeat(key, 'lv-lag'));
    await reg.flush();
    const unflushed = heartbeat(key, 'lv-lag');
    expect(await codeOf(reg.heartbeat(unflushed))).toBe('OK');
    // The coord dies before its next flush; the one after it loads the older sequence number.
    now += 60_001;
    expect(await codeOf(newRegistry().heartbeat(unflushed))).toBe('HEARTBEAT_STALE');
  });
});

describe('cached node keys', () => {
  it("refuses a rekeyed node's old key, even when it names the new key as its hint", async () => {
    const oldKey = await enrol(reg, 'lv-rekey');
    expect(await codeOf(reg.heartbeat(heartbeat(oldKey, 'lv-rekey')))).toBe('OK'); // its key object is cached now
    await reg.rekey('lv-rekey', 'op', 'seed lost');
    expect(await codeOf(reg.heartbeat(heartbeat(oldKey, 'lv-rekey')))).toBe('NODE_NOT_FOUND');
    const newKey = await enrol(reg, 'lv-rekey');
    expect(await codeOf(reg.heartbeat(heartbeat(oldKey, 'lv-rekey')))).toBe('NODE_NOT_FOUND');
    // Signed with the old key, pointing at the new one: only a stale cached key would verify it.
    const forged = JSON.parse(heartbeat(oldKey, 'lv-rekey')) as { signatures: { keyid: string }[] };
    forged.signatures[0]!.keyid = newKey.keyid;
    expect(await codeOf(reg.heartbeat(JSON.stringify(forged)))).toMatch(/SIGNATURE_INVALID|UNKNOWN_KEY/);
    expect(await codeOf(reg.heartbeat(heartbeat(newKey, 'lv-rekey')))).toBe('OK');
  });
});

describe('sweep and workable from memory', () => {
  it('a silent node drops out of workable() and a silent draining node fails, with no read of the nodes table', async () => {
    const active = await enrol(reg, 'lv-active');
    await reg.apply('lv-active', 'accept', operator);
    await reg.heartbeat(heartbeat(active, 'lv-active'));
    const draining = await enrol(reg, 'lv-drain');
    await reg.apply('lv-drain', 'accept', operator);
    await reg.heartbeat(
      heartbeat(draining, 'lv-drain', { health: { healthy: true, problems: [], load1: 0, memAvailableBytes: 1, diskFreeBytes: 1, runningJobs: 1 } }),
    );
    await reg.apply('lv-drain', 'drain', operator);
    expect((await reg.workable()).map((n) => n.id)).toContain('lv-active');

    statements = [];
    now += 3 * HB + 1;
    expect((await reg.workable()).map((n) => n.id)).not.toContain('lv-active');
    const done = await reg.sweep();
    expect(done).toEqual([expect.objectContaining({ nodeId: 'lv-drain', from: 'draining', to: 'failed', event: 'runner-lost' })]);
    expect(readsOfNodes()).toEqual([]);
    // The transition itself went through the ledger, atomically, as before.
    expect(await ledger.nodeStore.getNode('lv-drain')).toMatchObject({ state: 'failed', reason: expect.stringMatching(/no heartbeat/) });
    expect((await ledger.nodeStore.listTransitions('lv-drain')).at(-1)).toMatchObject({ from: 'draining', to: 'failed', actor: 'coord' });
    expect((await ledger.nodeStore.getNode('lv-active'))?.state).toBe('active');
  });
});

describe('two coords on one ledger', () => {
  it('a node whose heartbeats all reach the other coord stays workable here, and is not failed as silent while draining', async () => {
    // A load balancer sends every heartbeat of these nodes to coord B; coord A hears of them only through the ledger.
    const b = newRegistry();
    await b.start();
    const busy = { healthy: true, problems: [], load1: 0, memAvailableBytes: 1, diskFreeBytes: 1, runningJobs: 1 };
    // Enrolled and accepted through A; their first heartbeat (which activates them) reached A too.
    const active = await enrol(reg, 'lv-2c-active');
    await reg.apply('lv-2c-active', 'accept', operator);
    await reg.heartbeat(heartbeat(active, 'lv-2c-active'));
    const draining = await enrol(reg, 'lv-2c-drain');
    await reg.apply('lv-2c-drain', 'accept', operator);
    await reg.heartbeat(heartbeat(draining, 'lv-2c-drain', { health: busy }));
    await reg.apply('lv-2c-drain', 'drain', operator);
    expect((await reg.workable()).map((n) => n.id)).toContain('lv-2c-active');
    for (let round = 0; round < 4; round++) {
      // Each round is longer than the 3-heartbeat window: only what B wrote to the ledger keeps the nodes alive at A.
      now += FLUSH;
      expect(await codeOf(b.heartbeat(heartbeat(active, 'lv-2c-active')))).toBe('OK');
      expect(await codeOf(b.heartbeat(heartbeat(draining, 'lv-2c-drain', { health: busy })))).toBe('OK');
      expect(await b.sweep()).toEqual([]);
      expect(await reg.sweep(), `round ${round}`).toEqual([]);
      expect((await reg.workable()).map((n) => n.id)).toContain('lv-2c-active');
      expect(await reg.getNode('lv-2c-active')).toMatchObject({ lastHeartbeatAt: now, lastSeq: seq - 1 });
    }
    expect((await ledger.nodeStore.getNode('lv-2c-drain'))?.state).toBe('draining');
    // A's own flush does not write back an older heartbeat over B's (the ledger keeps the highest number).
    expect((await ledger.nodeStore.getNode('lv-2c-drain'))?.lastSeq).toBe(seq);
    // Silent everywhere: A does fail the draining node, once the ledger too has nothing newer.
    now += FLUSH;
    const done = await reg.sweep();
    expect(done).toEqual([expect.objectContaining({ nodeId: 'lv-2c-drain', from: 'draining', to: 'failed', event: 'runner-lost' })]);
    expect((await reg.workable()).map((n) => n.id)).not.toContain('lv-2c-active');
    await b.stop();
  });

  it('a node the other coord just activated is workable here only after a follow of the ledger; workable({ fresh }) follows it at once', async () => {
    // Accepted through A (commissioned); its activating heartbeat reaches B, which writes the change at once.
    const key = await enrol(reg, 'lv-2c-fresh');
    await reg.apply('lv-2c-fresh', 'accept', operator);
    const b = newRegistry();
    await b.start();
    expect(await codeOf(b.heartbeat(heartbeat(key, 'lv-2c-fresh')))).toBe('OK');
    await b.flush();
    expect((await ledger.nodeStore.getNode('lv-2c-fresh'))?.state).toBe('active');
    // A's memory lags until its next follow (a flush interval): a plain workable() does not have the node yet.
    statements = [];
    expect((await reg.workable()).map((n) => n.id)).not.toContain('lv-2c-fresh');
    expect(readsOfNodes()).toEqual([]);
    // Fresh: one read of the ledger, and the node is there, heard from (its heartbeat is within the window).
    expect((await reg.workable({ fresh: true })).map((n) => n.id)).toContain('lv-2c-fresh');
    expect(readsOfNodes()).toHaveLength(1);
    // What was followed stays: the plain answer has it now too.
    expect((await reg.workable()).map((n) => n.id)).toContain('lv-2c-fresh');
    // `via`: the read goes through the caller's transaction, not the store's own connection.
    statements = [];
    const viaTx: string[] = [];
    await ledger.db.transaction(async (tx) => {
      const recording = {
        query: <T>(sql: string, params?: readonly unknown[]) => (viaTx.push(sql), tx.query<T>(sql, params)),
        exec: (x: string) => tx.exec(x),
      };
      expect((await reg.workable({ fresh: true, via: recording })).map((n) => n.id)).toContain('lv-2c-fresh');
    });
    expect(readsOfNodes()).toEqual([]);
    expect(viaTx.filter((sql) => /\bFROM\s+nodes\b/i.test(sql))).toHaveLength(1);
    await b.stop();
  });
});
