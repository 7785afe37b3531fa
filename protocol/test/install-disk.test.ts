import { describe, expect, it } from 'vitest';
import {
  INSTALL_REPORT_PATH,
  PAYLOAD_TYPES,
  WritError,
  chooseInstallDisk,
  installPlanSha256,
  parseInstallReport,
  type InstallPlan,
  type InventoryDisk,
} from '../src/index.ts';

const GiB = 1024 ** 3;
const disk = (name: string, serial: string | null, extra: Partial<InventoryDisk> = {}): InventoryDisk => ({
  name,
  sizeBytes: 8 * GiB,
  model: null,
  serial,
  wwn: null,
  byId: serial ? [`virtio-${serial}`] : [],
  rotational: false,
  ...extra,
});

const codeOf = (f: () => unknown): { code: string; message: string; details: unknown } => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(WritError);
    const w = e as WritError;
    return { code: w.code, message: w.message, details: w.details };
  }
  throw new Error('expected a throw');
};

describe('chooseInstallDisk', () => {
  it('picks by serial whatever the order of same-size disks', () => {
    const a = disk('vdb', 'DATA-A');
    const b = disk('vdc', 'DATA-B');
    expect(chooseInstallDisk([a, b], { serial: 'DATA-B' }).name).toBe('vdc');
    // Swapped: the kernel names them the other way round; the serial still names the same disk.
    const a2 = { ...a, name: 'vdc' };
    const b2 = { ...b, name: 'vdb' };
    expect(chooseInstallDisk([b2, a2], { serial: 'DATA-B' }).name).toBe('vdb');
    expect(chooseInstallDisk([b2, a2], { serial: 'DATA-A' }).name).toBe('vdc');
  });

  it('requires every hint to hold', () => {
    const disks = [disk('sda', 'S1', { model: 'QEMU', wwn: '0x5000c500a' }), disk('sdb', 'S2', { model: 'QEMU', sizeBytes: 2 * GiB })];
    expect(chooseInstallDisk(disks, { model: 'QEMU', minBytes: 4 * GiB }).name).toBe('sda');
    expect(chooseInstallDisk(disks, { model: 'QEMU', maxBytes: 4 * GiB }).name).toBe('sdb');
    expect(chooseInstallDisk(disks, { wwn: '0x5000c500a' }).name).toBe('sda');
    expect(chooseInstallDisk(disks, { byId: '/dev/disk/by-id/virtio-S2' }).name).toBe('sdb');
    expect(chooseInstallDisk(disks, { byId: 'virtio-S2' }).name).toBe('sdb');
    const e = codeOf(() => chooseInstallDisk(disks, { serial: 'S1', maxBytes: 4 * GiB }));
    expect(e.code).toBe('INSTALL_DISK_NOT_FOUND');
    expect(e.message).toContain('sda (serial S1');
    expect(e.message).toContain('above');
    expect(e.message).toContain('sdb (serial S2');
    expect((e.details as { candidates: { name: string; matches: boolean }[] }).candidates.map((c) => [c.name, c.matches])).toEqual([
      ['sda', false],
      ['sdb', false],
    ]);
  });

  it('refuses an ambiguous choice, listing the candidates', () => {
    const e = codeOf(() => chooseInstallDisk([disk('vdb', 'A'), disk('vdc', 'B')], { minBytes: GiB }));
    expect(e.code).toBe('INSTALL_DISK_AMBIGUOUS');
    expect(e.message).toContain('vdb (serial A');
    expect(e.message).toContain('vdc (serial B');
  });

  it('never picks an excluded disk (the state partition or boot medium), even when it matches', () => {
    const disks = [disk('vda', 'BOOT'), disk('vdb', 'DATA')];
    const e = codeOf(() => chooseInstallDisk(disks, { serial: 'BOOT' }, [{ name: 'vda', why: 'it holds the state partition vda2' }]));
    expect(e.code).toBe('INSTALL_DISK_NOT_FOUND');
    expect(e.message).toContain('never installed to: it holds the state partition vda2');
    // A size range both match: the excluded one does not make it ambiguous.
    expect(chooseInstallDisk(disks, { minBytes: GiB }, [{ name: 'vda', why: 'boot' }]).name).toBe('vdb');
  });

  it('refuses a plan with no hint and a machine with no disk', () => {
    expect(codeOf(() => chooseInstallDisk([disk('vdb', 'A')], {})).code).toBe('INSTALL_DISK_NOT_FOUND');
    const e = codeOf(() => chooseInstallDisk([], { serial: 'A' }));
    expect(e.code).toBe('INSTALL_DISK_NOT_FOUND');
    expect(e.message).toContain('no disk');
  });
});

describe('install plans and reports', () => {
  const plan: InstallPlan = { type: PAYLOAD_TYPES.installPlan, class: 'c', disk: { serial: 'A' }, subvolumes: ['@root'], jobs: [] };
  it('hashes a plan by its canonical JSON', () => {
    const reordered = JSON.parse(
      '{"jobs":[],"subvolumes":["@root"],"disk":{"serial":"A"},"class":"c","type":"' + PAYLOAD_TYPES.installPlan + '"}',
    ) as InstallPlan;
    expect(installPlanSha256(reordered)).toBe(installPlanSha256(plan));
    expect(installPlanSha256({ ...plan, disk: { serial: 'B' } })).not.toBe(installPlanSha256(plan));
  });
  const base = {
    nodeId: 'node-1',
    method: 'POST',
    path: INSTALL_REPORT_PATH,
    ts: 1,
    class: 'c',
    planSha256: 'a'.repeat(64),
    ok: true,
    disk: { name: 'vdb', serial: 'A', wwn: null, byId: [], sizeBytes: 1 },
    subvolumes: ['@root'],
    jobs: [{ id: 'job-1', ok: true }],
  };
  it('parses a report and refuses inconsistent ones', () => {
    expect(parseInstallReport(base).ok).toBe(true);
    expect(codeOf(() => parseInstallReport({ ...base, jobs: [{ id: 'j', ok: false, code: 'X' }] })).code).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseInstallReport({ ...base, ok: false })).code).toBe('SCHEMA_INVALID');
    expect(parseInstallReport({ ...base, ok: false, disk: null, error: { code: 'INSTALL_DISK_NOT_FOUND', message: 'm' } }).ok).toBe(false);
    expect(codeOf(() => parseInstallReport({ ...base, extra: 1 })).code).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseInstallReport({ ...base, path: '/v1/nodes/heartbeat' })).code).toBe('SCHEMA_INVALID');
  });
});
