// The flow engine on the ledger's PGlite, with real signatures and key set; the nodes are given by the test.
//
// The nodes a fan-out step runs on are fixed when it starts. With several coords on one ledger a coord's memory
// of the nodes lags what the others wrote (a node another coord activated a moment ago), so a coord that drives
// flows under leases reads them fresh when a step starts; one coord alone (no leases) reads its memory only.
//
// Passes inside a caller's transaction (the one that records a runner's report): each under a savepoint, so a
// pass that fails is undone alone and the caller's writes stand.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  KeySetHolder,
  PAYLOAD_TYPES,
  b64url,
  bootstrapKeySet,
  encodeEnvelope,
  encodeFlowPayload,
  encodeKeySet,
  generateKeyPair,
  signEnvelope,
  silentLogger,
  stepScript,
  type FlowPayload,
  type NodeView,
} from '@writ/protocol';
import type { DispatchItem } from '@writ/supervisor';
import { FlowEngine } from '../src/flows/engine.ts';
import { listStepJobs } from '../src/flows/store.ts';
import { appendAuditIn } from '../src/ledger/audit.ts';
import { openLedger, type Ledger } from '../src/ledger/index.ts';
import type { Leases } from '../src/ledger/leases.ts';
import { startTestPostgres } from '../../tests/helpers/postgres.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`[flow engine] PostgreSQL case skipped: ${postgres.reason}`);

const admin = generateKeyPair();
const CLUSTER = 'writ-test';
let ledger: Ledger;
const keySets = new KeySetHolder({ cluster: CLUSTER, admins: { threshold: 1, keys: [{ keyid: admin.keyid, publicKey: b64url(admin.publicKey) }] } });

beforeAll(async () => {
  ledger = await openLedger();
  const nowS = Math.floor(Date.now() / 1000);
  const ks = bootstrapKeySet({ cluster: CLUSTER, admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS });
  keySets.accept(encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])), nowS);
}, 60_000);
afterAll(async () => {
  await ledger?.close();
  if (postgres.ok) await postgres.pg.stop();
});

const hv = (id: string, labels: Record<string, string> = { role: 'hv' }): NodeView => ({ id, labels });

/** Leases as one coord among several holds them: it gets every flow it asks for. */
const leases: Leases = {
  holder: 'test',
  claim: async (_kind, keys) => [...keys],
  release: async () => {},
  holds: () => true,
  withClaimed: async (_kind, keys, fn) => fn([...keys]),
  close: async () => {},
};

function fanOutFlow(id: string, selector: Record<string, string> = { role: 'hv' }, maxParallel?: number): string {
  const nowS = Math.floor(Date.now() / 1000);
  const flow: FlowPayload = {
    id,
    steps: [
      {
        name: 'fan',
        script: stepScript('export default () => 1'),
        target: { selector },
        each: true,
        ...(maxParallel ? { maxParallel } : {}),
        caps: [],
        limits: { timeoutMs: 10_000, memoryMiB: 64 },
        depends: [],
      },
    ],
    aud: CLUSTER,
    nonce: b64url(crypto.getRandomValues(new Uint8Array(16))),
    iat: nowS,
    exp: nowS + 900,
  };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), [admin]));
}

/** An engine whose memory knows n1 only; the ledger (a fresh read) has n1 and n2, just activated elsewhere. */
function engine(withLeases: boolean, fresh: () => NodeView[] = () => [hv('n1'), hv('n2')], on: Ledger = ledger) {
  const asked: boolean[] = [];
  /** For each fresh read: whether it was to go through the pass's own transaction. */
  const freshVia: boolean[] = [];
  const dispatched: DispatchItem[] = [];
  const e = new FlowEngine({
    ledger: on,
    keySets,
    clusterId: CLUSTER,
    workable: async (o) => {
      asked.push(o?.fresh ?? false);
      if (o?.fresh) freshVia.push(o.via !== undefined);
      return o?.fresh ? fresh() : [hv('n1')];
    },
    dispatch: async (items) => {
      dispatched.push(...items);
    },
    publish: () => {},
    nowS: () => Math.floor(Date.now() / 1000),
    log: silentLogger,
    ...(withLeases ? { leases } : {}),
  });
  return { e, asked, freshVia, dispatched };
}

describe("a fan-out step's nodes", () => {
  it('with leases (several coords): read fresh when the step starts, so a node activated through another coord is in', async () => {
    const { e, asked, freshVia, dispatched } = engine(true);
    await e.submit(fanOutFlow('fan-fresh'));
    expect((await listStepJobs(ledger.db, 'fan-fresh')).map((j) => [j.node, j.status])).toEqual([
      ['n1', 'queued'],
      ['n2', 'queued'],
    ]);
    expect(dispatched.map((d) => d.node).sort()).toEqual(['n1', 'n2']);
    // One fresh read for the pass that started the step; a later pass that starts nothing reads memory only.
    expect(asked.filter((f) => f)).toHaveLength(1);
    // Read through the pass's transaction, not a second connection while it holds one.
    expect(freshVia).toEqual([true]);
    const before = asked.length;
    await e.advance('fan-fresh');
    expect(asked.slice(before)).toEqual([false]);
  });

  it('read fresh once, when the step starts: its later instances (maxParallel) are placed from memory', async () => {
    const { e, asked, freshVia } = engine(true, () => [hv('n1'), hv('n2')]);
    await e.submit(fanOutFlow('fan-one-at-a-time', { role: 'hv' }, 1));
    expect((await listStepJobs(ledger.db, 'fan-one-at-a-time')).map((j) => j.node)).toEqual(['n1']);
    expect(freshVia).toEqual([true]);
    // n1's instance ends; the pass after it starts n2's instance, reading no nodes from the ledger.
    for (const to of ['running', 'succeeded'] as const) await ledger.transitionJob('fan-one-at-a-time.fan.n1', to);
    const before = asked.length;
    await e.advance('fan-one-at-a-time');
    expect(asked.slice(before)).toEqual([false]);
    // Memory lacks n2 (the node another coord activated): its instance is recorded, waiting to be placed.
    expect((await listStepJobs(ledger.db, 'fan-one-at-a-time')).map((j) => [j.node, j.status])).toEqual([
      ['n1', 'succeeded'],
      ['n2', 'admitted'],
    ]);
  });

  it('without leases (one coord, its memory is the ledger): memory only', async () => {
    const { e, asked } = engine(false);
    await e.submit(fanOutFlow('fan-memory'));
    expect((await listStepJobs(ledger.db, 'fan-memory')).map((j) => j.node)).toEqual(['n1']);
    expect(asked.every((f) => !f)).toBe(true);
  });
});

describe('passes inside the transaction of a report', () => {
  it("each flow under a savepoint: a pass that fails is undone alone, the caller's writes and the other passes stand", async () => {
    const { e, dispatched } = engine(false);
    // Two flows admitted whose first steps wait (no node matched on submit).
    await e.submit(fanOutFlow('in-tx-ok', { role: 'none' }));
    await e.submit(fanOutFlow('in-tx-broken', { tier: 'broken' }));
    expect(await listStepJobs(ledger.db, 'in-tx-ok')).toEqual([]);
    // From now on the ledger refuses the broken flow's events: its pass fails at its last write, after it
    // recorded its step's job.
    await ledger.db.exec(`
      CREATE FUNCTION test_refuse_flow_event() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.flow_id = 'in-tx-broken' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER test_refuse_flow_event BEFORE INSERT ON flow_events FOR EACH ROW EXECUTE FUNCTION test_refuse_flow_event();`);
    // The caller's transaction: its own write, then the passes. The nodes now match both flows' steps.
    const nodes = [hv('n1', { role: 'none' }), hv('n2', { tier: 'broken' })];
    const result = await ledger.db.transaction(async (tx) => {
      await appendAuditIn(tx, [{ kind: 'test.report', actor: 'test', subject: 'in-tx', data: {} }]);
      return e.advanceManyIn(tx, ['in-tx-broken', 'in-tx-ok'], nodes);
    });
    await ledger.db.exec('DROP TRIGGER test_refuse_flow_event ON flow_events; DROP FUNCTION test_refuse_flow_event();');
    expect(result.later).toEqual(['in-tx-broken']);
    expect(result.passes.map((p) => [p.flowId, p.toDispatch.map((d) => d.node)])).toEqual([['in-tx-ok', ['n1']]]);
    // Committed: the caller's write and the good pass; of the broken pass, nothing (its step job was undone).
    expect((await ledger.tailAudit(20)).filter((a) => a.kind === 'test.report').map((a) => a.subject)).toEqual(['in-tx']);
    expect((await listStepJobs(ledger.db, 'in-tx-ok')).map((j) => j.node)).toEqual(['n1']);
    expect(await listStepJobs(ledger.db, 'in-tx-broken')).toEqual([]);
    expect(await ledger.getJob('in-tx-broken.fan.n2')).toBeNull();
    // Handed to the supervisors only after the commit, by afterCommit.
    expect(dispatched).toEqual([]);
    await e.afterCommit(result.passes);
    expect(dispatched.map((d) => d.jobId)).toEqual(['in-tx-ok.fan.n1']);
  });
});

describe.skipIf(!postgres.ok)('passes inside the transaction of a report, on PostgreSQL', () => {
  it('a flow whose row another transaction holds is not waited for: it is left for later', async () => {
    if (!postgres.ok) return;
    const pgLedger = await openLedger({ databaseUrl: await postgres.pg.freshDatabaseUrl() });
    try {
      const { e: onPg } = engine(false, undefined, pgLedger);
      await onPg.submit(fanOutFlow('held', { role: 'none' }));
      // Another transaction (a cancel, another coord's pass) holds the flow's row until told to let go.
      let letGo!: () => void;
      const held = new Promise<void>((r) => (letGo = r));
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const holder = pgLedger.db.transaction(async (tx) => {
        await tx.query('SELECT id FROM flows WHERE id = $1 FOR UPDATE', ['held']);
        locked();
        await held;
      });
      await isLocked;
      // Were the pass to wait for the row, this would never return: the holder lets go only after it.
      const result = await pgLedger.db.transaction((tx) => onPg.advanceManyIn(tx, ['held'], [hv('n1', { role: 'none' })])).finally(() => letGo());
      await holder;
      expect(result).toEqual({ passes: [], later: ['held'] });
      expect(await listStepJobs(pgLedger.db, 'held')).toEqual([]);
    } finally {
      await pgLedger.close();
    }
  });
});
