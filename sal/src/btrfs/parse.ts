// Parsers from btrfs-progs, util-linux and /proc text to JSON. Pure functions, tested on captured output.
import { WritError } from '@writ/protocol';

export interface SubvolumeListEntry {
  id: number;
  generation: number;
  parentId: number;
  topLevelId: number;
  uuid: string;
  parentUuid: string | null;
  receivedUuid: string | null;
  /** Path from the filesystem's top level (= the pool root). */
  path: string;
}

const dash = (v: string | undefined): string | null => (v === undefined || v === '-' ? null : v);

/** `btrfs subvolume list -p -u -q -R <mount>` */
export function parseSubvolumeList(text: string): SubvolumeListEntry[] {
  const out: SubvolumeListEntry[] = [];
  const line = /^ID (\d+) gen (\d+) parent (\d+) top level (\d+) parent_uuid (\S+)\s+received_uuid (\S+)\s+uuid (\S+) path (.*)$/;
  for (const l of text.split('\n')) {
    if (l.trim() === '') continue;
    const m = line.exec(l);
    if (!m) throw new WritError('COMMAND_FAILED', `unexpected btrfs subvolume list line: ${l.slice(0, 200)}`);
    out.push({
      id: Number(m[1]),
      generation: Number(m[2]),
      parentId: Number(m[3]),
      topLevelId: Number(m[4]),
      parentUuid: dash(m[5]),
      receivedUuid: dash(m[6]),
      uuid: m[7] as string,
      path: m[8] as string,
    });
  }
  return out;
}

/** `btrfs subvolume list -r <mount>`: the ids of read-only subvolumes. */
export function parseReadOnlyIds(text: string): Set<number> {
  const ids = new Set<number>();
  for (const m of text.matchAll(/^ID (\d+) /gm)) ids.add(Number(m[1]));
  return ids;
}

export interface SubvolumeInfo {
  name: string;
  uuid: string;
  parentUuid: string | null;
  receivedUuid: string | null;
  id: number;
  generation: number;
  parentId: number;
  topLevelId: number;
  readOnly: boolean;
  flags: string[];
  createdAt: string | null;
  /** Snapshots of this subvolume, as paths from the pool root. */
  snapshots: string[];
}

/** `btrfs subvolume show <path>` */
export function parseSubvolumeShow(text: string): SubvolumeInfo {
  const fields = new Map<string, string>();
  const snapshots: string[] = [];
  let inSnapshots = false;
  for (const raw of text.split('\n').slice(1)) {
    if (raw.trim() === '') continue;
    const kv = /^\t([A-Za-z][A-Za-z ()]*):\s*(.*)$/.exec(raw);
    if (kv) {
      const key = (kv[1] as string).trim();
      inSnapshots = key === 'Snapshot(s)';
      if (!inSnapshots) fields.set(key, (kv[2] as string).trim());
      continue;
    }
    if (inSnapshots && raw.startsWith('\t\t')) snapshots.push(raw.trim());
  }
  const num = (k: string): number => {
    const v = fields.get(k);
    if (v === undefined || !/^\d+$/.test(v)) throw new WritError('COMMAND_FAILED', `btrfs subvolume show: missing ${k}`);
    return Number(v);
  };
  const uuid = fields.get('UUID');
  if (!uuid) throw new WritError('COMMAND_FAILED', 'btrfs subvolume show: missing UUID');
  const flags = (fields.get('Flags') ?? '-').split(/[\s,|]+/).filter((f) => f && f !== '-');
  const created = dash(fields.get('Creation time'));
  return {
    name: fields.get('Name') ?? '',
    uuid,
    parentUuid: dash(fields.get('Parent UUID')),
    receivedUuid: dash(fields.get('Received UUID')),
    id: num('Subvolume ID'),
    generation: num('Generation'),
    parentId: num('Parent ID'),
    topLevelId: num('Top level ID'),
    readOnly: flags.includes('readonly'),
    flags,
    createdAt: created,
    snapshots,
  };
}

export interface QgroupEntry {
  qgroupid: string;
  referencedBytes: number;
  exclusiveBytes: number;
  maxReferencedBytes: number | null;
  maxExclusiveBytes: number | null;
  /** The subvolume path the tool names (`<toplevel>`, `<stale>` for a deleted one), or null. */
  path: string | null;
}

/** `btrfs qgroup show -re --raw [-f] <path>` */
export function parseQgroupShow(text: string): QgroupEntry[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => /^-{4,}/.test(l.trim()));
  if (start < 0) throw new WritError('COMMAND_FAILED', 'btrfs qgroup show: no table in output');
  const limit = (v: string): number | null => (v === 'none' ? null : Number(v));
  const out: QgroupEntry[] = [];
  for (const l of lines.slice(start + 1)) {
    const m = /^\s*(\d+\/\d+)\s+(\d+)\s+(\d+)\s+(\d+|none)\s+(\d+|none)(?:\s+(.*?))?\s*$/.exec(l);
    if (!m) {
      if (l.trim() !== '') throw new WritError('COMMAND_FAILED', `unexpected btrfs qgroup line: ${l.slice(0, 200)}`);
      continue;
    }
    out.push({
      qgroupid: m[1] as string,
      referencedBytes: Number(m[2]),
      exclusiveBytes: Number(m[3]),
      maxReferencedBytes: limit(m[4] as string),
      maxExclusiveBytes: limit(m[5] as string),
      path: m[6] ? m[6] : null,
    });
  }
  return out;
}

export interface UsageBlockGroup {
  profile: string;
  sizeBytes: number;
  usedBytes: number;
}

export interface PoolUsage {
  deviceSizeBytes: number;
  allocatedBytes: number;
  unallocatedBytes: number;
  usedBytes: number;
  freeEstimatedBytes: number;
  freeEstimatedMinBytes: number | null;
  dataRatio: number;
  metadataRatio: number;
  globalReserveBytes: number;
  data: UsageBlockGroup | null;
  metadata: UsageBlockGroup | null;
  system: UsageBlockGroup | null;
}

/** `btrfs filesystem usage -b <mount>` */
export function parseFilesystemUsage(text: string): PoolUsage {
  const overall = (label: string): string | undefined => new RegExp(`^\\s*${label}:\\s+(.+)$`, 'm').exec(text)?.[1]?.trim();
  const int = (label: string): number => {
    const v = overall(label);
    const m = v === undefined ? null : /^(\d+)/.exec(v);
    if (!m) throw new WritError('COMMAND_FAILED', `btrfs filesystem usage: missing ${label}`);
    return Number(m[1]);
  };
  const ratio = (label: string): number => Number(overall(label) ?? 'NaN');
  const group = (type: string): UsageBlockGroup | null => {
    const m = new RegExp(`^${type},([^:]+): Size:(\\d+), Used:(\\d+)`, 'm').exec(text);
    return m ? { profile: (m[1] as string).toLowerCase(), sizeBytes: Number(m[2]), usedBytes: Number(m[3]) } : null;
  };
  const min = /\(min: (\d+)\)/.exec(overall('Free \\(estimated\\)') ?? '');
  return {
    deviceSizeBytes: int('Device size'),
    allocatedBytes: int('Device allocated'),
    unallocatedBytes: int('Device unallocated'),
    usedBytes: int('Used'),
    freeEstimatedBytes: int('Free \\(estimated\\)'),
    freeEstimatedMinBytes: min ? Number(min[1]) : null,
    dataRatio: ratio('Data ratio'),
    metadataRatio: ratio('Metadata ratio'),
    globalReserveBytes: int('Global reserve'),
    data: group('Data'),
    metadata: group('Metadata'),
    system: group('System'),
  };
}

export interface MountEntry {
  /** Path of the subvolume/directory mounted, from the filesystem's root. */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  options: string;
}

const unescapeMountField = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** /proc/self/mountinfo */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const l = left.split(' ');
    const r = right.split(' ');
    out.push({
      root: unescapeMountField(l[3] ?? ''),
      mountPoint: unescapeMountField(l[4] ?? ''),
      fsType: r[0] ?? '',
      source: unescapeMountField(r[1] ?? ''),
      options: r[2] ?? '',
    });
  }
  return out;
}

/** `blkid -p -o export <target>`: KEY=value lines. */
export function parseBlkidExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export interface SendStreamHead {
  /** SUBVOL for a full stream, SNAPSHOT for an incremental one. */
  kind: 'subvol' | 'snapshot';
  /** The name the received subvolume will get. */
  name: string;
  /** UUID of the sent subvolume; the received one records it as its received UUID. */
  uuid: string;
}

// Layout from the btrfs send stream format (v1/v2): magic, le32 version, then commands of
// le32 length, le16 command, le32 crc, followed by TLV attributes of le16 type, le16 length.
const SEND_MAGIC = 'btrfs-stream\0';
const SEND_CMD_SUBVOL = 1;
const SEND_CMD_SNAPSHOT = 2;
const SEND_ATTR_UUID = 1;
const SEND_ATTR_PATH = 15;

/** Reads the first command of a send stream: what subvolume it creates. */
export function parseSendStreamHead(bytes: Uint8Array): SendStreamHead {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = (why: string) => new WritError('SAL_INVALID_ARGUMENT', `not a btrfs send stream: ${why}`);
  if (buf.length < SEND_MAGIC.length + 4 + 10 || buf.toString('latin1', 0, SEND_MAGIC.length) !== SEND_MAGIC) throw bad('bad magic');
  let at = SEND_MAGIC.length + 4;
  const len = buf.readUInt32LE(at);
  const cmd = buf.readUInt16LE(at + 4);
  at += 10;
  if (cmd !== SEND_CMD_SUBVOL && cmd !== SEND_CMD_SNAPSHOT) throw bad(`first command is ${cmd}, not subvol/snapshot`);
  const end = at + len;
  if (end > buf.length) throw bad('truncated first command');
  let name: string | undefined;
  let uuid: string | undefined;
  while (at + 4 <= end) {
    const type = buf.readUInt16LE(at);
    const alen = buf.readUInt16LE(at + 2);
    const value = buf.subarray(at + 4, at + 4 + alen);
    if (type === SEND_ATTR_PATH) name = value.toString('utf8');
    if (type === SEND_ATTR_UUID && alen === 16) {
      const h = value.toString('hex');
      uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    }
    at += 4 + alen;
  }
  if (name === undefined || uuid === undefined) throw bad('first command lacks a path or uuid');
  return { kind: cmd === SEND_CMD_SUBVOL ? 'subvol' : 'snapshot', name, uuid };
}
