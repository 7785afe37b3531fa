#!/usr/bin/env node
// `npm run chaos -- --jobs N --minutes M`: the history check (R8) over a longer fault schedule. Starts coord,
// supervisor and an effect runner as processes, injects every fault kind on a schedule, and prints
// `lost=N duplicated=N unexpected=N` with the recovery time after each fault. Exit 1 when a count is not 0.
// Needs root (network namespaces, tmpfs), redis-server and redis-sentinel.
import { parseArgs } from 'node:util';
import { register } from 'tsx/esm/api';

const HELP = `usage: npm run chaos -- [--jobs N] [--minutes M] [--faults k1,k2,...] [--settle-seconds S] [--keep]

Runs the history check: jobs are submitted evenly over M minutes while faults are injected in turn
(${'kill-runner, kill-supervisor, kill-coord, stop-runner, redis-restart, redis-wipe, disk-full, sentinel-failover'});
the Sentinel failover runs on a second cluster that uses the Sentinel group from its start. Then it prints lost/duplicated/unexpected and the recovery time
after each fault, and exits 1 when any count is not 0. Defaults: --jobs 300 --minutes 10.
Needs root, redis-server and redis-sentinel.`;

let values;
try {
  ({ values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '300' },
      minutes: { type: 'string', default: '10' },
      faults: { type: 'string' },
      'settle-seconds': { type: 'string', default: '90' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (e) {
  process.stderr.write(`${e.message}\n${HELP}\n`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}
const jobs = Number(values.jobs);
const minutes = Number(values.minutes);
if (!Number.isInteger(jobs) || jobs < 1 || !(minutes > 0)) {
  process.stderr.write(`--jobs must be a positive integer and --minutes a positive number\n${HELP}\n`);
  process.exit(2);
}
if (process.getuid?.() !== 0) {
  process.stderr.write('the history check needs root (network namespaces, tmpfs)\n');
  process.exit(2);
}
register();
const { runHistory, FAULT_KINDS } = await import('../tests/history/harness.ts');
const faults = values.faults ? values.faults.split(',').map((s) => s.trim()) : undefined;
const bad = faults?.filter((f) => !FAULT_KINDS.includes(f)) ?? [];
if (bad.length) {
  process.stderr.write(`unknown fault kind(s): ${bad.join(', ')}; known: ${FAULT_KINDS.join(', ')}\n`);
  process.exit(2);
}
const t0 = Date.now();
const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s]`;
const log = (l) => process.stderr.write(`${stamp()} ${l}\n`);
// By default two runs: every fault but the failover on a plain Redis, then the failover on a cluster that
// runs on the Sentinel group from its start. --faults with the failover among others moves one cluster from
// the plain Redis to a Sentinel group mid-run instead (see docs/operations.md, History check).
const plan = faults
  ? [{ faults, jobs, minutes }]
  : [
      { faults: FAULT_KINDS.filter((k) => k !== 'sentinel-failover'), jobs: jobs - Math.max(5, Math.floor(jobs / 10)), minutes: minutes * 0.85 },
      { faults: ['sentinel-failover'], jobs: Math.max(5, Math.floor(jobs / 10)), minutes: minutes * 0.15 },
    ];
const total = { lost: 0, duplicated: 0, unexpected: 0 };
const kept = [];
for (const [i, p] of plan.entries()) {
  log(`run ${i + 1}/${plan.length}: ${p.jobs} jobs over ${p.minutes.toFixed(2)} min, faults ${p.faults.join(', ')}`);
  const result = await runHistory({
    jobs: p.jobs,
    durationMs: Math.round(p.minutes * 60_000),
    settleMs: Number(values['settle-seconds']) * 1000,
    keep: values.keep,
    faults: p.faults,
    log,
  });
  for (const l of result.unplannedExits) process.stderr.write(`unplanned exit: ${l}\n`);
  for (const l of result.lines) process.stdout.write(`${plan.length > 1 ? `run ${i + 1}: ` : ''}${l}\n`);
  for (const k of Object.keys(total)) total[k] += result[k];
  if (result.lost || result.duplicated || result.unexpected || values.keep) kept.push(result.dir);
}
if (plan.length > 1) process.stdout.write(`lost=${total.lost} duplicated=${total.duplicated} unexpected=${total.unexpected}\n`);
for (const d of kept) process.stdout.write(`run folder kept: ${d}\n`);
process.exit(total.lost || total.duplicated || total.unexpected ? 1 : 0);
