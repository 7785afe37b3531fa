// writ nodes list|show|accept|reject|drain|reinstall|rescue|unrescue|retire|rekey   and   writ audit tail|verify
import { WritError } from '@writ/protocol';
import { humanDuration, parse } from '../args.ts';
import { api, resolveCoord } from '../client.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

interface NodeView {
  id: string;
  state: string;
  reachable: boolean;
  keyid: string | null;
  labels: Record<string, string>;
  version: string;
  health: { healthy: boolean; problems: string[]; load1: number; memAvailableBytes: number; diskFreeBytes: number; runningJobs: number } | null;
  lastHeartbeatAt: string | null;
  stateSince: string;
  deadlineAt: string | null;
  reason: string | null;
  transitions?: { from: string | null; to: string; event: string; actor: string; reason: string; at: number }[];
  /** Set by reinstall, rescue and unrescue: what the machine's next iPXE boot does, for which MACs. */
  boot?: { answer: string; macs: string[] };
  /** The latest install report of its class's install plan (docs/boot.md, install plans). */
  install?: InstallView | null;
}

interface InstallView {
  ok: boolean;
  class: string;
  planSha256: string;
  at: string;
  disk: { name: string; serial: string | null; wwn: string | null; byId: string[] } | null;
  subvolumes: string[];
  jobs: { id: string; ok: boolean; code?: string; message?: string }[];
  error?: { code: string; message: string };
}

function installLines(i: InstallView): string[] {
  const disk = i.disk
    ? ` on ${i.disk.name} (serial ${i.disk.serial ?? '-'}, wwn ${i.disk.wwn ?? '-'}${i.disk.byId.length ? `, by-id ${i.disk.byId.join(' ')}` : ''})`
    : '';
  const out = [`install: ${i.ok ? 'ok' : 'FAILED'}: plan ${i.planSha256.slice(0, 12)} (class ${i.class})${disk}, reported ${i.at}`];
  if (i.subvolumes.length) out.push(`  subvolumes ${i.subvolumes.join(' ')}`);
  for (const j of i.jobs) out.push(`  ${j.id}: ${j.ok ? 'ok' : `${j.code ?? 'failed'}: ${j.message ?? ''}`}`);
  if (i.error) out.push(`  stopped: ${i.error.code}: ${i.error.message}`);
  return out;
}

interface BootAnswerView {
  mac: string;
  answer: string;
  setBy: string;
  setAt: number;
}

const NODES_HELP = `usage: writ nodes <list|show|accept|reject|drain|reinstall|rescue|unrescue|retire|rekey> [ID] [--reason TEXT] [--json]

  list                 every node: state, reachable, health, last heartbeat
  show ID              one node with its inventory and every lifecycle transition
  accept ID            an inspected node joins (it becomes active on its next healthy heartbeat)
  reject ID            refuse a discovered/inspected node (retired)
  drain ID             take no new work; back to commissioned when its running jobs are done
  reinstall ID         reprovision: its next iPXE boot installs (boots the node image over HTTP);
                       installing once it fetched that boot, installed when it registers again
                       (with a class install plan: when it reports the plan ran), active on its
                       next healthy heartbeat; its boot answer goes back to local
  rescue ID            park a node in rescue from any stable state, and its next iPXE boot boots the
                       node image in rescue mode (no jobs); unrescue returns it where it was and its
                       next iPXE boot to the local disk
  retire ID            take it out for good
  rekey ID             forget its key so it can enrol a new identity (after a lost or corrupt seed)

Only active, reachable nodes receive work. A failed node never returns to the pool by itself.
Without a BMC, reinstall and rescue take effect when the machine next boots through iPXE
(GET /boot/ipxe?mac=…; docs/boot.md): reboot it yourself.

example:
  writ nodes list && writ nodes accept node-7`;

async function list(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, { coord: { type: 'string' } }, { min: 0, max: 0, usage: 'writ nodes list' });
  if (values.help) return (io.out(NODES_HELP), EXIT.ok);
  const { nodes } = (await api<{ nodes: NodeView[] }>(await resolveCoord(values.coord, ctx.env), 'GET', '/v1/nodes')).body;
  if (values.json) return (printJson(io, { nodes }), EXIT.ok);
  io.out(`${'NODE'.padEnd(16)} ${'STATE'.padEnd(16)} ${'REACH'.padEnd(6)} ${'HEALTH'.padEnd(8)} ${'JOBS'.padEnd(5)} LAST HEARTBEAT`);
  const now = Date.now();
  for (const n of nodes) {
    const hb = n.lastHeartbeatAt ? `${humanDuration((now - Date.parse(n.lastHeartbeatAt)) / 1000)} ago` : 'never';
    io.out(
      `${n.id.padEnd(16)} ${n.state.padEnd(16)} ${(n.reachable ? 'yes' : 'NO').padEnd(6)} ${(n.health ? (n.health.healthy ? 'ok' : 'SICK') : '-').padEnd(8)} ${String(n.health?.runningJobs ?? '-').padEnd(5)} ${hb}${n.health && !n.health.healthy ? `  ${n.health.problems.join('; ')}` : ''}`,
    );
  }
  return EXIT.ok;
}

async function show(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, { coord: { type: 'string' } }, { min: 1, max: 1, usage: 'writ nodes show ID' });
  if (values.help) return (io.out(NODES_HELP), EXIT.ok);
  const coord = await resolveCoord(values.coord, ctx.env);
  const n = (await api<NodeView>(coord, 'GET', `/v1/nodes/${encodeURIComponent(positionals[0]!)}`)).body;
  if (values.json) return (printJson(io, n), EXIT.ok);
  io.out(
    `node      ${n.id}\nstate     ${n.state} since ${n.stateSince}${n.deadlineAt ? ` (deadline ${n.deadlineAt})` : ''}${n.reason ? ` — ${n.reason}` : ''}`,
  );
  io.out(
    `reachable ${n.reachable ? 'yes' : 'no'}; last heartbeat ${n.lastHeartbeatAt ?? 'never'}\nkey       ${n.keyid ?? '(none: awaiting a new identity)'}\nlabels    ${JSON.stringify(n.labels)}\nversion   ${n.version}`,
  );
  if (n.health)
    io.out(
      `health    ${n.health.healthy ? 'ok' : `SICK: ${n.health.problems.join('; ')}`}; load ${n.health.load1.toFixed(2)}; ${Math.round(n.health.memAvailableBytes / 2 ** 20)} MiB free memory; ${Math.round(n.health.diskFreeBytes / 2 ** 30)} GiB free disk; ${n.health.runningJobs} running`,
    );
  if (n.install) for (const l of installLines(n.install)) io.out(l);
  const boot = (await api<{ boot?: BootAnswerView[] }>(coord, 'GET', `/v1/enroll/nodes/${encodeURIComponent(n.id)}`)).body.boot ?? [];
  for (const b of boot) io.out(`next boot ${b.mac}: ${b.answer} (iPXE), set by ${b.setBy} at ${new Date(b.setAt).toISOString()}`);
  io.out('transitions:');
  for (const t of n.transitions ?? [])
    io.out(`  ${new Date(t.at).toISOString()}  ${(t.from ?? '-').padEnd(14)} → ${t.to.padEnd(14)} ${t.event.padEnd(12)} by ${t.actor}: ${t.reason}`);
  return EXIT.ok;
}

/** `event` is the lifecycle action the coord applies (reinstall is a reprovision). */
function action(name: string, event = name): (argv: string[], io: Io, ctx: CliContext) => Promise<number> {
  return async (argv, io, ctx) => {
    const { values, positionals } = parse(
      argv,
      { coord: { type: 'string' }, reason: { type: 'string' } },
      { min: 1, max: 1, usage: `writ nodes ${name} ID [--reason TEXT]` },
    );
    if (values.help) return (io.out(NODES_HELP), EXIT.ok);
    const n = (
      await api<NodeView>(
        await resolveCoord(values.coord, ctx.env),
        'POST',
        `/v1/nodes/${encodeURIComponent(positionals[0]!)}/${event}`,
        values.reason ? { reason: values.reason } : {},
      )
    ).body;
    if (values.json) return (printJson(io, n), EXIT.ok);
    io.out(`node ${n.id}: ${name} → ${n.state}`);
    if (n.boot && n.boot.macs.length > 0) io.out(`next iPXE boot of ${n.boot.macs.join(', ')}: ${n.boot.answer}`);
    else if (n.boot)
      io.out(
        `its inventory lists no MAC, so no iPXE answer was set: boot the machine into the ${n.boot.answer === 'local' ? 'local disk' : 'node image'} yourself`,
      );
    return EXIT.ok;
  };
}

export const nodesCommand: Command = {
  name: 'nodes',
  summary: 'list, inspect, accept, drain, reinstall, rescue and retire nodes',
  help: NODES_HELP,
  subcommands: {
    list,
    show,
    ...Object.fromEntries(['accept', 'reject', 'drain', 'rescue', 'unrescue', 'retire', 'rekey'].map((a) => [a, action(a)])),
    reinstall: action('reinstall', 'reprovision'),
  },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};

const AUDIT_HELP = `usage: writ audit <tail|verify> [--n N] [--json]

  tail [--n 50]   the newest entries of the append-only audit log
  verify          recompute the hash chain; exit 1 and name the first bad entry if any was edited,
                  removed or reordered

example:
  writ audit verify`;

async function tail(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, { coord: { type: 'string' }, n: { type: 'string', default: '50' } }, { min: 0, max: 0, usage: 'writ audit tail [--n N]' });
  if (values.help) return (io.out(AUDIT_HELP), EXIT.ok);
  const n = Number(values.n);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new WritError('USAGE', '--n must be 1 to 1000');
  const { entries } = (
    await api<{ entries: { seq: number; at?: string; time?: string; createdAt?: string; kind: string; actor: string; subject: string; data: unknown }[] }>(
      await resolveCoord(values.coord, ctx.env),
      'GET',
      `/v1/audit?tail=${n}`,
    )
  ).body;
  if (values.json) return (printJson(io, { entries }), EXIT.ok);
  for (const e of entries)
    io.out(
      `${String(e.seq).padStart(6)}  ${String(e.at ?? e.time ?? e.createdAt ?? '')}  ${e.kind.padEnd(16)} ${e.actor.slice(0, 40).padEnd(40)} ${e.subject}  ${JSON.stringify(e.data).slice(0, 160)}`,
    );
  return EXIT.ok;
}

async function verify(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, { coord: { type: 'string' } }, { min: 0, max: 0, usage: 'writ audit verify' });
  if (values.help) return (io.out(AUDIT_HELP), EXIT.ok);
  const r = (
    await api<{ ok: boolean; count: number; firstBadSeq?: number; reason?: string }>(await resolveCoord(values.coord, ctx.env), 'GET', '/v1/audit/verify')
  ).body;
  if (values.json) printJson(io, r);
  else if (r.ok) io.out(`audit log verifies: ${r.count} entries, hash chain intact`);
  else io.err(`writ: AUDIT_CHAIN_BROKEN: entry ${r.firstBadSeq}: ${r.reason}`);
  return r.ok ? EXIT.ok : EXIT.failure;
}

export const auditCommand: Command = {
  name: 'audit',
  summary: 'read and verify the hash-chained audit log',
  help: AUDIT_HELP,
  subcommands: { tail, verify },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};
