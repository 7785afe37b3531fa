// Running a class's install plan on the node (issue 11): choose the target disk by the plan's stable hints
// (never by name or order), give it one GPT data partition, make btrfs on it and the plan's subvolumes (the
// btrfs SAL does the disk work), then run the plan's signed jobs in order through the runner's own path
// (runEnvelope: the same verification, journal and sandbox as a job from the queue). A refused or failed job
// stops the install. The outcome is recorded on the state partition (`install.json`: this plan, by sha256,
// is installed) and reported to the coord, signed with the node key.
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  INSTALL_REPORT_PATH,
  PAYLOAD_TYPES,
  WritError,
  chooseInstallDisk,
  encodeEnvelope,
  fetchAnswer,
  fromB64,
  installPlanSha256,
  parseEnvelope,
  signEnvelope,
  silentLogger,
  toErrorJSON,
  utf8,
  type ExcludedDisk,
  type InstallPlan,
  type InstallReport,
  type InventoryDisk,
  type KeyPair,
  type Logger,
} from '@writ/protocol';
import { btrfsConfig, createLayoutSubvolume, formatPool, mountPool, partitionDisk, unmountPool } from '@writ/sal';
import { collectInventory } from './inventory.ts';
import type { JournalOutcome } from './journal.ts';

/** The GPT partition name and btrfs label an install plan's data partition gets. */
export const INSTALL_DATA_NAME = 'writ-data';
const RECORD = 'install.json';

export type InstallReportBody = Omit<InstallReport, 'nodeId' | 'method' | 'path' | 'ts'>;

export interface InstallPlanOptions {
  plan: InstallPlan;
  /**
   * The boot mode from the kernel command line: `install` (an install boot an operator ordered) wipes the
   * target disk once; `enroll` (an unknown machine's netboot) and `normal` install only to a blank disk.
   */
  mode: 'normal' | 'install' | 'enroll' | 'rescue';
  /** The state partition's directory (where `install.json` records the installed plan); null when diskless. */
  stateDir: string | null;
  /** Runs one signed job envelope as the runner runs queued ones (Runner.runEnvelope). */
  runner: { runEnvelope(raw: string): Promise<JournalOutcome> };
  /** Where the data partition is mounted while its subvolumes are made (default /run/writ/install). */
  mountDir?: string;
  /** A folder that lives for this boot only (default /run/writ): marks what this boot did already. */
  bootDir?: string;
  /** The disks to choose from (default: this machine's inventory). */
  disks?: () => Promise<InventoryDisk[]>;
  /** Where disk device nodes are (default /dev). */
  devDir?: string;
  /** Root /sys and /proc are read under, to find the disks never installed to (default /). */
  sysRoot?: string;
  /** How long a plan job refused because no key set reached this node yet is tried again (default 180 s). */
  keySetWaitMs?: number;
  logger?: Logger;
}

export interface InstalledRecord extends InstallReportBody {
  at: string;
}

/** The plan the state partition records as installed, or null. */
export async function installedPlanRecord(stateDir: string | null): Promise<InstalledRecord | null> {
  if (!stateDir) return null;
  try {
    return JSON.parse(await readFile(path.join(stateDir, RECORD), 'utf8')) as InstalledRecord;
  } catch {
    return null;
  }
}

/** Whether the plan should run on this boot: an install boot runs it (once per boot), otherwise only a plan not yet recorded as installed. */
export async function installPlanDue(
  plan: InstallPlan,
  opts: { mode: InstallPlanOptions['mode']; stateDir: string | null; bootDir?: string },
): Promise<{ due: boolean; why: string }> {
  const sha = installPlanSha256(plan);
  if (opts.mode === 'rescue') return { due: false, why: 'rescue boot: nothing is installed' };
  const doneThisBoot = await exists(path.join(opts.bootDir ?? '/run/writ', `install-${sha}.done`));
  if (doneThisBoot) return { due: false, why: `plan ${sha.slice(0, 12)} was installed during this boot` };
  if (opts.mode === 'install') return { due: true, why: 'install boot (writ.boot=install)' };
  const rec = await installedPlanRecord(opts.stateDir);
  if (rec?.planSha256 === sha) return { due: false, why: `plan ${sha.slice(0, 12)} is recorded as installed (${rec.at})` };
  return { due: true, why: rec ? `the state partition records another plan (${rec.planSha256.slice(0, 12)})` : 'no plan is recorded as installed' };
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function text(p: string): Promise<string | null> {
  return readFile(p, 'utf8').then(
    (s) => s,
    () => null,
  );
}

/**
 * Disks an install never touches: the one holding the state partition (GPT name writ-state, which is also
 * the USB image the node booted from) and any disk with a filesystem mounted (outside `mountDir`).
 */
export async function excludedDisks(sysRoot: string, mountDir: string): Promise<ExcludedDisk[]> {
  const out: ExcludedDisk[] = [];
  const mounts = ((await text(path.join(sysRoot, 'proc/self/mounts'))) ?? '')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[0]?.startsWith('/dev/') && f[1] !== undefined && f[1] !== mountDir);
  const blockDir = path.join(sysRoot, 'sys/block');
  const disks = await readdir(blockDir).catch(() => [] as string[]);
  for (const d of disks.sort()) {
    const names = [d, ...(await readdir(path.join(blockDir, d)).catch(() => [] as string[])).filter((p) => p.startsWith(d))];
    for (const p of names) {
      const uevent = (await text(path.join(blockDir, d, p === d ? '' : p, 'uevent'))) ?? '';
      if (p !== d && /^PARTNAME=writ-state$/m.test(uevent)) {
        out.push({ name: d, why: `it holds the state partition ${p}` });
        break;
      }
      const m = mounts.find((f) => f[0] === `/dev/${p}`);
      if (m) {
        out.push({ name: d, why: `${p} is mounted at ${m[1]}` });
        break;
      }
    }
  }
  return out;
}

/** The job id an envelope claims (read unverified, for the report only: runEnvelope verifies it). */
function jobIdOf(raw: string): string {
  try {
    const p = JSON.parse(Buffer.from(fromB64(parseEnvelope(raw).payload)!).toString('utf8')) as { id?: unknown };
    return typeof p.id === 'string' ? p.id.slice(0, 128) : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The SAL's refusal to overwrite, told as the operator gets past it (the SAL's own words name its `wipe`/`force` argument). */
const notBlank = (e: unknown) =>
  `${(e as Error).message.replace(/; pass (wipe|force) to (replace|overwrite) it$/, '')}; an install boot replaces it (writ nodes reinstall ID, then boot the machine through iPXE)`;

/** Runs the plan; never throws: the report says what happened, with a stable code when it stopped. */
export async function runInstallPlan(opts: InstallPlanOptions): Promise<InstallReportBody> {
  const log = opts.logger ?? silentLogger;
  const { plan } = opts;
  const sha = installPlanSha256(plan);
  const mountDir = opts.mountDir ?? '/run/writ/install';
  const bootDir = opts.bootDir ?? '/run/writ';
  const body: InstallReportBody = { class: plan.class, planSha256: sha, ok: false, disk: null, subvolumes: [], jobs: [] };
  try {
    // A run that starts no longer has an installed plan to show (an install boot wipes the disk, a normal boot
    // runs because the record is missing or names another plan): drop the record first, so a run that stops
    // is never followed, on the next boot, by the record of an earlier success sent as this install's report.
    if (opts.stateDir) await rm(path.join(opts.stateDir, RECORD), { force: true });
    const disks = opts.disks ? await opts.disks() : (await collectInventory({ diskless: false, sysRoot: opts.sysRoot })).disks;
    const disk = chooseInstallDisk(disks, plan.disk, await excludedDisks(opts.sysRoot ?? '/', mountDir));
    body.disk = { name: disk.name, serial: disk.serial, wwn: disk.wwn, byId: disk.byId, sizeBytes: disk.sizeBytes };
    log.info({ disk: body.disk, hints: plan.disk }, 'install plan: target disk chosen');
    const device = path.join(opts.devDir ?? '/dev', disk.name);
    // An install boot replaces what the disk holds, once: an agent restarted later in the same boot keeps it.
    const wipeMark = path.join(bootDir, `install-${sha}.wiped`);
    const wipe = opts.mode === 'install' && !(await exists(wipeMark));
    let part;
    try {
      part = await partitionDisk(btrfsConfig({ mount: mountDir, devices: [device] }), { device, name: INSTALL_DATA_NAME, wipe });
    } catch (e) {
      if ((e as WritError).code === 'RESOURCE_CONFLICT')
        throw new WritError('INSTALL_DISK_NOT_BLANK', `the install disk ${disk.name} (serial ${disk.serial ?? '-'}): ${notBlank(e)}`);
      throw e;
    }
    if (wipe) {
      await mkdir(bootDir, { recursive: true });
      await writeFile(wipeMark, `${new Date().toISOString()}\n`);
    }
    const cfg = btrfsConfig({ mount: mountDir, devices: [part.partition] });
    try {
      await formatPool(cfg, { device: part.partition, label: INSTALL_DATA_NAME });
    } catch (e) {
      if ((e as WritError).code === 'RESOURCE_CONFLICT') throw new WritError('INSTALL_DISK_NOT_BLANK', `the data partition ${part.partition}: ${notBlank(e)}`);
      throw e;
    }
    await mountPool(cfg, { device: part.partition });
    try {
      for (const sv of plan.subvolumes) {
        await createLayoutSubvolume(cfg, { name: sv });
        body.subvolumes.push(sv);
      }
    } finally {
      await unmountPool(cfg, { detach: false });
    }
    log.info({ partition: part.partition, partitioned: part.created, subvolumes: body.subvolumes }, 'install plan: disk laid out');
    const keySetWait = opts.keySetWaitMs ?? 180_000;
    for (const raw of plan.jobs) {
      const id = jobIdOf(raw);
      const deadline = Date.now() + keySetWait;
      let out = await opts.runner.runEnvelope(raw);
      // The node's key set may not have reached it yet (it comes through Redis): wait for it, not for anything else.
      while (!out.ok && out.error.code === 'KEYSET_MISSING' && Date.now() < deadline) {
        await sleep(2000);
        out = await opts.runner.runEnvelope(raw);
      }
      body.jobs.push(out.ok ? { id, ok: true } : { id, ok: false, code: out.error.code, message: out.error.message.slice(0, 2000) });
      log.info({ job: id, ok: out.ok, ...(out.ok ? {} : { code: out.error.code }) }, 'install plan: job ended');
      if (!out.ok)
        throw new WritError('INSTALL_FAILED', `plan job ${id} did not succeed: ${out.error.code}: ${out.error.message}`.slice(0, 3900), {
          job: id,
          code: out.error.code,
        });
    }
    body.ok = true;
    await mkdir(bootDir, { recursive: true });
    await writeFile(path.join(bootDir, `install-${sha}.done`), `${new Date().toISOString()}\n`);
    if (opts.stateDir) {
      await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
      const file = path.join(opts.stateDir, RECORD);
      const rec: InstalledRecord = { ...body, at: new Date().toISOString() };
      await writeFile(`${file}.tmp`, `${JSON.stringify(rec, null, 2)}\n`, { mode: 0o600 });
      await rename(`${file}.tmp`, file);
    }
  } catch (e) {
    const err = toErrorJSON(e, true);
    body.ok = false;
    body.error = { code: err.code, message: err.message.slice(0, 4000) };
    // An unexpected error is reported as INTERNAL without its text; the node's own log keeps it.
    log.error(
      { code: err.code, err: err.message, ...(err.code === 'INTERNAL' ? { detail: (e as Error).message, stack: (e as Error).stack } : {}) },
      'install plan stopped',
    );
  }
  return body;
}

/** The report as the node signs it. */
export function signInstallReport(nodeId: string, key: KeyPair, body: InstallReportBody, nowMs = Date.now()): string {
  const report: InstallReport = { nodeId, method: 'POST', path: INSTALL_REPORT_PATH, ts: nowMs, ...body };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.installReport, utf8.encode(JSON.stringify(report)), [key]));
}

/**
 * Sends the signed report until the coord takes it (or refuses it for good); a coord that is away is asked
 * again with a backoff until `deadlineMs`. Returns the coord's answer, or throws its refusal.
 */
export async function sendInstallReport(opts: {
  coordUrl: string;
  nodeId: string;
  key: KeyPair;
  body: InstallReportBody;
  deadlineMs?: number;
  logger?: Logger;
}): Promise<unknown> {
  const deadline = Date.now() + (opts.deadlineMs ?? 600_000);
  let delay = 500;
  for (;;) {
    try {
      const a = await fetchAnswer({
        method: 'POST',
        url: new URL(INSTALL_REPORT_PATH, opts.coordUrl),
        body: signInstallReport(opts.nodeId, opts.key, opts.body),
        timeoutMs: 15_000,
        unavailable: (m) => new WritError('LEDGER_UNAVAILABLE', `coord ${m}`),
        unreachable: (e) => new WritError('LEDGER_UNAVAILABLE', `coord unreachable: ${e.message}`),
      });
      return a.body;
    } catch (e) {
      const err = toErrorJSON(e);
      if (!err.retryable || Date.now() > deadline) throw e;
      opts.logger?.warn({ code: err.code, err: err.message, retryInMs: delay }, 'install report not sent yet; trying again');
      await sleep(delay);
      delay = Math.min(delay * 2, 10_000);
    }
  }
}
