// Install plans on the node (issue 11): which disk a plan installs to, chosen by stable hints only (serial,
// WWN, a /dev/disk/by-id name, model, size range; never /dev/sdX or the order the kernel found the disks in),
// and the signed report a node sends the coord once it ran (or could not run) its class's plan.
import { canonicalJson } from './canonical-json.ts';
import { sha256Hex } from './encoding.ts';
import { WritError } from './errors.ts';
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import type { DiskHints, InstallPlan, InventoryDisk } from './enrollment.ts';

export const INSTALL_REPORT_PAYLOAD_TYPE = PAYLOAD_TYPES.installReport;
/** The route a node posts its install report to; signed into the report so it cannot be replayed elsewhere. */
export const INSTALL_REPORT_PATH = '/v1/nodes/install-report';

/** A plan's identity: sha256 of its canonical JSON (what the node records as installed, and reports). */
export function installPlanSha256(plan: InstallPlan): string {
  return sha256Hex(canonicalJson(plan));
}

/** A disk the node must never install to, with why (it holds the state partition, or the boot medium). */
export interface ExcludedDisk {
  name: string;
  why: string;
}

const describe = (d: InventoryDisk) =>
  `${d.name} (serial ${d.serial ?? '-'}, wwn ${d.wwn ?? '-'}, model ${d.model ?? '-'}, ${d.sizeBytes} bytes${d.byId.length ? `, by-id ${d.byId.join(' ')}` : ''})`;

/** Why `d` fails the hints (empty when every hint holds). Serial, WWN and model compare exactly; by-id is a name under /dev/disk/by-id. */
export function diskHintMisses(d: InventoryDisk, hints: DiskHints): string[] {
  const misses: string[] = [];
  if (hints.serial !== undefined && d.serial !== hints.serial) misses.push(`serial ${d.serial ?? 'none'} is not ${hints.serial}`);
  if (hints.wwn !== undefined && d.wwn !== hints.wwn) misses.push(`wwn ${d.wwn ?? 'none'} is not ${hints.wwn}`);
  if (hints.byId !== undefined) {
    const want = hints.byId.replace(/^\/dev\/disk\/by-id\//, '');
    if (!d.byId.includes(want)) misses.push(`no by-id name ${want}`);
  }
  if (hints.model !== undefined && d.model !== hints.model) misses.push(`model ${d.model ?? 'none'} is not ${hints.model}`);
  if (hints.minBytes !== undefined && d.sizeBytes < hints.minBytes) misses.push(`${d.sizeBytes} bytes is below ${hints.minBytes}`);
  if (hints.maxBytes !== undefined && d.sizeBytes > hints.maxBytes) misses.push(`${d.sizeBytes} bytes is above ${hints.maxBytes}`);
  return misses;
}

/**
 * The one disk the hints name. Every hint given must hold; a plan with no hint at all is refused (it would
 * name whatever disk happens to be alone). Disks in `exclude` (the state partition's, the boot medium) are
 * never chosen, even when they match. Throws INSTALL_DISK_NOT_FOUND or INSTALL_DISK_AMBIGUOUS with every
 * candidate and why it did or did not match, in the message and in `details.candidates`.
 */
export function chooseInstallDisk(disks: readonly InventoryDisk[], hints: DiskHints, exclude: readonly ExcludedDisk[] = []): InventoryDisk {
  const given = Object.entries(hints).filter(([, v]) => v !== undefined);
  if (given.length === 0) throw new WritError('INSTALL_DISK_NOT_FOUND', 'the install plan gives no disk hint (serial, wwn, byId, model, minBytes, maxBytes)');
  const verdicts = disks.map((d) => {
    const ex = exclude.find((e) => e.name === d.name);
    const misses = diskHintMisses(d, hints);
    return { disk: d, misses, excluded: ex?.why ?? null };
  });
  const matching = verdicts.filter((v) => v.misses.length === 0 && v.excluded === null);
  const candidates = verdicts.map((v) => ({
    name: v.disk.name,
    serial: v.disk.serial,
    wwn: v.disk.wwn,
    model: v.disk.model,
    sizeBytes: v.disk.sizeBytes,
    matches: v.misses.length === 0 && v.excluded === null,
    why: v.excluded !== null ? `never installed to: ${v.excluded}` : v.misses.length ? v.misses.join('; ') : 'every hint holds',
  }));
  const lines = verdicts.map(
    (v) => `${describe(v.disk)}: ${v.excluded !== null ? `never installed to: ${v.excluded}` : v.misses.length ? v.misses.join('; ') : 'matches'}`,
  );
  const want = given.map(([k, v]) => `${k}=${String(v)}`).join(', ');
  if (matching.length === 0)
    throw new WritError('INSTALL_DISK_NOT_FOUND', `no disk matches ${want}: ${lines.join(' | ') || 'this machine has no disk'}`, {
      hints: { ...hints },
      candidates,
    });
  if (matching.length > 1)
    throw new WritError(
      'INSTALL_DISK_AMBIGUOUS',
      `${matching.length} disks match ${want}: ${matching.map((v) => describe(v.disk)).join(' | ')}; add a serial, wwn or byId hint`,
      {
        hints: { ...hints },
        candidates,
      },
    );
  return matching[0]!.disk;
}

/** One plan job's outcome as the node reports it. */
export interface InstallReportJob {
  id: string;
  ok: boolean;
  /** The error code when it failed or was refused. */
  code?: string;
  message?: string;
}

/** What a node tells the coord after running (or failing to run) its class's install plan. */
export interface InstallReport {
  nodeId: string;
  method: 'POST';
  path: typeof INSTALL_REPORT_PATH;
  /** Milliseconds since the epoch when signed; the coord refuses a report far from its clock. */
  ts: number;
  class: string;
  planSha256: string;
  ok: boolean;
  /** The disk the hints chose; null when none was chosen. */
  disk: { name: string; serial: string | null; wwn: string | null; byId: string[]; sizeBytes: number } | null;
  subvolumes: string[];
  jobs: InstallReportJob[];
  /** Why the install stopped, when it did. */
  error?: { code: string; message: string };
}

const s = (n: number) => ({ type: 'string', maxLength: n });
const reportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['nodeId', 'method', 'path', 'ts', 'class', 'planSha256', 'ok', 'disk', 'subvolumes', 'jobs'],
  properties: {
    nodeId: { type: 'string', pattern: '^[a-z0-9][a-z0-9.-]{0,62}$' },
    method: { const: 'POST' },
    path: { const: INSTALL_REPORT_PATH },
    ts: { type: 'integer', minimum: 0 },
    class: s(63),
    planSha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
    ok: { type: 'boolean' },
    disk: {
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['name', 'serial', 'wwn', 'byId', 'sizeBytes'],
      properties: {
        name: s(64),
        serial: { type: ['string', 'null'], maxLength: 256 },
        wwn: { type: ['string', 'null'], maxLength: 256 },
        byId: { type: 'array', maxItems: 32, items: s(256) },
        sizeBytes: { type: 'integer', minimum: 0 },
      },
    },
    subvolumes: { type: 'array', maxItems: 64, items: s(64) },
    jobs: {
      type: 'array',
      maxItems: 16,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'ok'],
        properties: { id: s(128), ok: { type: 'boolean' }, code: s(64), message: s(2000) },
      },
    },
    error: { type: 'object', additionalProperties: false, required: ['code', 'message'], properties: { code: s(64), message: s(4000) } },
  },
};
const validateReport = compileSchema<InstallReport>(reportSchema);

/** Checks an install report's payload; throws SCHEMA_INVALID with the first problem. */
export function parseInstallReport(v: unknown): InstallReport {
  assertSchema(validateReport, v, 'install report');
  const r = v as InstallReport;
  if (r.ok && (r.disk === null || r.error !== undefined || r.jobs.some((j) => !j.ok)))
    throw new WritError('SCHEMA_INVALID', 'an install report that says ok names its disk, carries no error and only succeeded jobs');
  if (!r.ok && r.error === undefined) throw new WritError('SCHEMA_INVALID', 'a failed install report says why (error)');
  return r;
}
