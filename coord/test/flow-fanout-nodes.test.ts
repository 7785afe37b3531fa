// The nodes a fan-out step runs on are fixed when it starts. With several coords on one ledger a coord's memory
// of the nodes lags what the others wrote (a node another coord activated a moment ago), so a coord that drives
// flows under leases reads them fresh when a step starts; one coord alone (no leases) reads its memory only.
// The flow engine on the ledger's PGlite, with real signatures and key set; the nodes are given by the test.
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
import { openLedger, type Ledger } from '../src/ledger/index.ts';
import type { Leases } from '../src/ledger/leases.ts';

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
afterAll(() => ledger?.close());

/** Leases as one coord among several holds them: it gets every flow it asks for. */
const leases: Leases = {
  holder: 'test',
  claim: async (_kind, keys) => [...keys],
  release: async () => {},
  holds: () => true,
  withClaimed: async (_kind, keys, fn) => fn([...keys]),
  close: async () => {},
};

function fanOutFlow(id: string): string {
  const nowS = Math.floor(Date.now() / 1000);
  const flow: FlowPayload = {
    id,
    steps: [
      {
        name: 'fan',
        script: stepScript('export default () => 1'),
        target: { selector: { role: 'hv' } },
        each: true,
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
function engine(withLeases: boolean) {
  const asked: boolean[] = [];
  const dispatched: DispatchItem[] = [];
  const hv = (id: string): NodeView => ({ id, labels: { role: 'hv' } });
  const e = new FlowEngine({
    ledger,
    keySets,
    clusterId: CLUSTER,
    workable: async (o) => {
      asked.push(o?.fresh ?? false);
      return o?.fresh ? [hv('n1'), hv('n2')] : [hv('n1')];
    },
    dispatch: async (items) => {
      dispatched.push(...items);
    },
    publish: () => {},
    nowS: () => Math.floor(Date.now() / 1000),
    log: silentLogger,
    ...(withLeases ? { leases } : {}),
  });
  return { e, asked, dispatched };
}

describe("a fan-out step's nodes", () => {
  it('with leases (several coords): read fresh when the step starts, so a node activated through another coord is in', async () => {
    const { e, asked, dispatched } = engine(true);
    await e.submit(fanOutFlow('fan-fresh'));
    expect((await listStepJobs(ledger.db, 'fan-fresh')).map((j) => [j.node, j.status])).toEqual([
      ['n1', 'queued'],
      ['n2', 'queued'],
    ]);
    expect(dispatched.map((d) => d.node).sort()).toEqual(['n1', 'n2']);
    // One fresh read for the pass that started the step; a later pass that starts nothing reads memory only.
    expect(asked.filter((f) => f)).toHaveLength(1);
    const before = asked.length;
    await e.advance('fan-fresh');
    expect(asked.slice(before)).toEqual([false]);
  });

  it('without leases (one coord, its memory is the ledger): memory only', async () => {
    const { e, asked } = engine(false);
    await e.submit(fanOutFlow('fan-memory'));
    expect((await listStepJobs(ledger.db, 'fan-memory')).map((j) => j.node)).toEqual(['n1']);
    expect(asked.every((f) => !f)).toBe(true);
  });
});
