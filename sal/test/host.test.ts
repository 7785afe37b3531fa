// host.facts checked against what the machine's own tools say (nproc, /proc/meminfo, ip -j link, lsblk,
// uname), never against hard-coded values.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { HOST_OPERATIONS, hostFacts, type HostFacts } from '../src/index.ts';

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();
let facts: HostFacts;

beforeAll(async () => {
  facts = await hostFacts();
});

describe('host.facts against the machine', () => {
  it('counts the CPUs nproc counts and reads the model /proc/cpuinfo names', () => {
    expect(facts.cpu.threads).toBe(Number(sh('nproc', ['--all'])));
    expect(facts.cpu.cores).toBeGreaterThan(0);
    expect(facts.cpu.cores).toBeLessThanOrEqual(facts.cpu.threads);
    const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1];
    if (model) expect(facts.cpu.model).toBe(model);
    const flags = (/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/);
    for (const f of facts.cpu.flags) expect(flags).toContain(f);
  });

  it('reports the memory total from /proc/meminfo and `free -b`', () => {
    const kb = Number(/^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]);
    expect(facts.memory.totalBytes).toBe(kb * 1024);
    const free = Number(sh('free', ['-b']).split('\n')[1]?.split(/\s+/)[1]);
    expect(facts.memory.totalBytes).toBe(free);
    expect(facts.memory.availableBytes).toBeGreaterThan(0);
    expect(facts.memory.availableBytes).toBeLessThanOrEqual(facts.memory.totalBytes);
  });

  it('lists every link `ip -j link` shows, with the same MAC, MTU and state', () => {
    const links = JSON.parse(sh('ip', ['-j', 'link', 'show'])) as { ifname: string; address?: string; mtu: number; operstate: string; link_type: string }[];
    expect(facts.nics.map((n) => n.name).sort()).toEqual(links.map((l) => l.ifname.split('@')[0]).sort());
    for (const l of links) {
      const nic = facts.nics.find((n) => n.name === l.ifname.split('@')[0]);
      expect(nic?.mac ?? null, l.ifname).toBe(l.link_type === 'none' ? (nic?.mac ?? null) : (l.address ?? null));
      expect(nic?.mtu, l.ifname).toBe(l.mtu);
      expect(nic?.state.toUpperCase(), l.ifname).toBe(l.operstate);
    }
    expect(facts.nics.find((n) => n.name === 'lo')?.virtual).toBe(true);
  });

  it('lists the whole disks lsblk lists, with sizes and /dev/disk/by-id names', () => {
    const disks = JSON.parse(sh('lsblk', ['-J', '-d', '-b', '-o', 'NAME,SIZE,TYPE,ROTA'])) as {
      blockdevices: { name: string; size: number | string; type: string; rota: boolean | string }[];
    };
    const whole = disks.blockdevices.filter((d) => d.type === 'disk' && !/^(zram|ram)/.test(d.name));
    expect(facts.disks.map((d) => d.name).sort()).toEqual(whole.map((d) => d.name).sort());
    for (const d of whole) {
      const fact = facts.disks.find((x) => x.name === d.name);
      expect(fact?.sizeBytes).toBe(Number(d.size));
      expect(fact?.rotational).toBe(d.rota === true || d.rota === '1');
    }
    const byIdDir = '/dev/disk/by-id';
    for (const fact of facts.disks) {
      const expected = existsSync(byIdDir)
        ? readdirSync(byIdDir)
            .filter((l) => path.basename(readlinkSync(path.join(byIdDir, l))) === fact.name)
            .sort()
        : [];
      expect(fact.byId).toEqual(expected);
    }
  });

  it('reports the kernel uname reports, the hostname and DMI as sysfs has it', () => {
    expect(facts.kernel.release).toBe(sh('uname', ['-r']));
    expect(facts.kernel.version).toBe(sh('uname', ['-v']));
    expect({ x86_64: 'x64', aarch64: 'arm64' }[sh('uname', ['-m'])] ?? sh('uname', ['-m'])).toBe(facts.kernel.arch);
    expect(facts.hostname).toBe(sh('hostname', []));
    const dmi = (f: string) => (existsSync(`/sys/class/dmi/id/${f}`) ? readFileSync(`/sys/class/dmi/id/${f}`, 'utf8').trim() : null);
    expect(facts.dmi).toEqual({
      vendor: dmi('sys_vendor'),
      product: dmi('product_name'),
      serial: (() => {
        try {
          return dmi('product_serial');
        } catch {
          return null;
        }
      })(),
      biosVersion: dmi('bios_version'),
      boardName: dmi('board_name'),
    });
  });

  it('agrees with systemd-detect-virt where it is installed, and with /dev/kvm', () => {
    expect(facts.virtualization.kvm).toBe(existsSync('/dev/kvm'));
    const hasHypervisorFlag = /\bhypervisor\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
    expect(facts.virtualization.hypervisor !== null).toBe(hasHypervisorFlag);
    let detected: string | null = null;
    try {
      detected = sh('systemd-detect-virt', ['--container']);
    } catch (e) {
      const out = String((e as { stdout?: unknown }).stdout ?? '').trim();
      if (out === 'none') detected = 'none';
    }
    if (detected !== null) expect(facts.virtualization.container ?? 'none').toBe(detected);
  });

  it('is plain JSON and served by the host.facts operation', async () => {
    expect(JSON.parse(JSON.stringify(facts))).toEqual(facts);
    const op = HOST_OPERATIONS.find((o) => o.capability === 'host.facts');
    const viaOp = await op?.run({}, { config: undefined });
    expect(viaOp?.cpu.threads).toBe(os.cpus().length);
    await expect(op?.run({ extra: 1 } as never, { config: undefined })).rejects.toMatchObject({ code: 'UNKNOWN_FIELD' });
  });
});
