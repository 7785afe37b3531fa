// Nodes through the whole path: a registered node gets work only after an operator accepts it, a drained
// node gets none, and the audit log records it all and detects an edited entry (`writ audit verify`).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '@writ/cli';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
beforeAll(async () => {
  s = await startTestStack({ nodes: [], heartbeatMs: 300 });
}, 60_000);
afterAll(async () => {
  await s?.close();
});

async function cli(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    [...args, '--coord', s.url],
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_TOKEN: s.token }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('nodes on the signed path', () => {
  it('a node gets work only after an operator accepts it', async () => {
    await s.startRunner('node-new', { rack: 'r7' }, { accept: false });
    await s.waitForNode('node-new', ['inspected']);
    const { envelope, id } = s.sign(NOOP, { target: { node: 'node-new' } });
    expect((await s.post(envelope)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await s.ledger.getJob(id))?.status).toBe('admitted');
    const accepted = await cli(['nodes', 'accept', 'node-new', '--json']);
    expect(accepted.code).toBe(0);
    expect(JSON.parse(accepted.out).state).toBe('commissioned');
    await s.waitForNode('node-new', ['active']);
    expect((await s.waitFor(id)).status).toBe('succeeded');
  });

  it('a drained node gets no new work and returns to commissioned when empty', async () => {
    expect((await cli(['nodes', 'drain', 'node-new'])).code).toBe(0);
    await s.waitForNode('node-new', ['commissioned']);
    const { envelope, id } = s.sign(NOOP, { target: { node: 'node-new' } });
    expect((await s.post(envelope)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await s.ledger.getJob(id))?.status).toBe('admitted');
    const list = await cli(['nodes', 'list', '--json']);
    expect(JSON.parse(list.out).nodes.find((n: { id: string }) => n.id === 'node-new')).toMatchObject({ state: 'commissioned', reachable: true });
    const show = await cli(['nodes', 'show', 'node-new']);
    expect(show.out).toMatch(/draining\s+→ commissioned\s+drained/);
    // Back into service only when an operator says so; then the waiting job runs.
    expect((await cli(['nodes', 'accept', 'node-new'])).code).toBe(0);
    await s.waitForNode('node-new', ['active']);
    expect((await s.waitFor(id)).status).toBe('succeeded');
  });

  it('refuses an operator action the lifecycle does not allow, with the allowed ones named', async () => {
    const r = await cli(['nodes', 'reject', 'node-new']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/TRANSITION_NOT_ALLOWED: cannot reject a node that is active; allowed from active: .*drain/);
  });

  it('`writ audit verify` passes on the real log and names an edited entry', async () => {
    const ok = await cli(['audit', 'verify']);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/hash chain intact/);
    const kinds = (await s.ledger.tailAudit(200)).map((e) => e.kind);
    expect(kinds).toEqual(expect.arrayContaining(['keyset.publish', 'node.transition', 'job.admit', 'job.effect']));
    // Someone with database access edits an entry behind the append-only trigger's back.
    await s.ledger.db.exec('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update');
    await s.ledger.db.query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3");
    await s.ledger.db.exec('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update');
    const bad = await cli(['audit', 'verify']);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/AUDIT_CHAIN_BROKEN: entry 3/);
  });
});
