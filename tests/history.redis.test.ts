// The history check in CI (R8, issue 9): coord, supervisor and an effect runner as processes, a short
// schedule with every fault kind once (SIGKILL of each process, SIGSTOP of the runner past its lock, Redis
// restarted with and without its data, the coord's ledger disk filled and freed, a Sentinel failover), then
// the checker over the ledger, the node journal and `ip netns`: nothing lost, duplicated or unexpected.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FAULT_KINDS, HELPER_FILES, runHistory } from './history/harness.ts';

const has = (bin: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const isRoot = process.getuid?.() === 0;
// Two clusters: one on a plain append-only Redis for every fault but the failover, one on a Sentinel group
// from its start for the failover. (Moving a running cluster from the plain Redis to the Sentinel group,
// which runHistory does when the failover is scheduled with other faults, loses the jobs submitted after the
// move; see the History check section of docs/operations.md.)
const faults = FAULT_KINDS.filter((k) => k !== 'sentinel-failover');
const skipReason = !isRoot
  ? 'needs root (network namespaces, tmpfs)'
  : !has('redis-server') || !has('redis-sentinel')
    ? 'needs redis-server and redis-sentinel'
    : !has('ip')
      ? 'needs iproute2'
      : HELPER_FILES.some((f) => !existsSync(f))
        ? `needs ${HELPER_FILES.filter((f) => !existsSync(f)).join(', ')}`
        : null;

describe.skipIf(skipReason !== null)(`history check${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  it('loses, duplicates and surprises nothing across SIGKILLs, SIGSTOP, Redis restarts and wipes and a full ledger disk', async () => {
    const result = await runHistory({ jobs: 60, durationMs: 60_000, settleMs: 60_000, faults, log: (l) => process.stderr.write(`[history] ${l}\n`) });
    for (const l of [...result.unplannedExits.map((e) => `unplanned exit: ${e}`), ...result.lines]) process.stderr.write(`[history] ${l}\n`);
    expect(result.faults.map((f) => f.kind).sort()).toEqual([...faults].sort());
    expect(result.accepted).toBeGreaterThan(0);
    expect({ summary: result.summary, findings: result.findings }).toEqual({ summary: 'lost=0 duplicated=0 unexpected=0', findings: [] });
  }, 300_000);

  it('loses, duplicates and surprises nothing across a Sentinel failover', async () => {
    const result = await runHistory({
      jobs: 12,
      durationMs: 20_000,
      settleMs: 60_000,
      faults: ['sentinel-failover'],
      log: (l) => process.stderr.write(`[history sentinel] ${l}\n`),
    });
    for (const l of [...result.unplannedExits.map((e) => `unplanned exit: ${e}`), ...result.lines]) process.stderr.write(`[history sentinel] ${l}\n`);
    expect(result.faults.map((f) => f.kind)).toEqual(['sentinel-failover']);
    expect(result.recoveries[0]?.recoveryMs).not.toBeNull();
    expect({ summary: result.summary, findings: result.findings }).toEqual({ summary: 'lost=0 duplicated=0 unexpected=0', findings: [] });
  }, 240_000);
});
