// The node's host table built from its SAL configuration: every SAL capability of a configured area is
// callable, an unconfigured area is refused by the broker (HOST_CALL_DENIED), and a call through the broker
// reaches the real SAL operation with the job's identity and nix pins. Also keeps docs/sal.md's index of
// operations complete.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CAPABILITIES, errorCodeOf, type JsonValue } from '@writ/protocol';
import { HostBroker, defaultHostTable, type HostCallJob } from '../src/sandbox/index.ts';
import { salHostTable, type SalHostConfig } from '../src/sal-table.ts';

const DOUBLE = fileURLToPath(new URL('../../sal/test/doubles/cloud-hypervisor-double.ts', import.meta.url));
const TSX_LOADER = fileURLToPath(new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url));
const DOCS = fileURLToPath(new URL('../../docs/sal.md', import.meta.url));
const CONFIG_FREE = new Set(defaultHostTable().keys());
const SAL_AREAS = ['btrfs', 'net', 'vm', 'mycelium', 'nix'] as const;

const hex = randomBytes(3).toString('hex');
let root = '';
let all: SalHostConfig;

function job(caps: string[], extra: Partial<HostCallJob> = {}): HostCallJob {
  return { jobId: `sal-${hex}`, attempt: 1, source: '', args: null, caps, limits: { timeoutMs: 10_000, memoryMiB: 16 }, ...extra };
}
const codeOf = (p: Promise<unknown>): Promise<string | undefined> =>
  p.then(
    () => undefined,
    (e: unknown) => errorCodeOf(e) ?? String(e),
  );

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'writ-saltable-'));
  for (const d of ['images', 'boot', 'state', 'pool', 'profiles', 'mycelium']) await mkdir(path.join(root, d));
  await writeFile(path.join(root, 'boot', 'vmlinux'), 'not really a kernel');
  await writeFile(path.join(root, 'images', 'root.img'), Buffer.alloc(4096));
  // The cloud-hypervisor double stands in for the VMM binary, as in sal/test/vm.test.ts.
  const binary = path.join(root, 'cloud-hypervisor');
  await writeFile(
    binary,
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} --import ${JSON.stringify(`file://${TSX_LOADER}`)} ${JSON.stringify(DOUBLE)} "$@"\n`,
  );
  await chmod(binary, 0o755);
  const requestLog = path.join(root, 'requests.jsonl');
  await appendFile(requestLog, '');
  process.env.CH_DOUBLE_REQUEST_LOG = requestLog;
  all = {
    btrfs: { mount: path.join(root, 'pool') },
    net: {},
    vm: {
      driver: 'cloud-hypervisor',
      stateDir: path.join(root, 'state'),
      imagesRoot: path.join(root, 'images'),
      bootRoot: path.join(root, 'boot'),
      cloudHypervisorBinary: binary,
      apiTimeoutMs: 5000,
    },
    mycelium: { binary: path.join(root, 'mycelium', 'bin'), keyFile: path.join(root, 'mycelium', 'key'), stateDir: path.join(root, 'mycelium') },
    nix: { profilesRoot: path.join(root, 'profiles') },
  };
});

afterAll(async () => {
  if (!root) return;
  // A double left running by a failed test is found through its pid file and stopped.
  const pidFile = path.join(root, 'state', `vm-${hex}`, 'vmm.pid');
  if (existsSync(pidFile)) {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      // gone already
    }
  }
  await rm(root, { recursive: true, force: true });
});

describe('salHostTable', () => {
  it('with every area configured, has an entry for every capability in the registry', () => {
    const table = salHostTable(all);
    const sal = [...CAPABILITIES.keys()].filter((n) => !CONFIG_FREE.has(n));
    expect(sal.length).toBeGreaterThan(50);
    for (const name of sal) expect(table.has(name), name).toBe(true);
    // Nothing beyond the registry: the broker would refuse it anyway, but the table should not offer it.
    for (const name of table.keys()) expect(CAPABILITIES.has(name), name).toBe(true);
  });

  it('offers nothing of an area that is not configured, and each configured area only its own capabilities', () => {
    expect([...salHostTable({}).keys()].sort()).toEqual([...CONFIG_FREE].sort());
    for (const area of SAL_AREAS) {
      const table = salHostTable({ [area]: all[area] });
      const offered = [...table.keys()].filter((n) => !CONFIG_FREE.has(n));
      expect(offered.length, area).toBeGreaterThan(0);
      for (const n of offered) expect(n.startsWith(`${area}.`), n).toBe(true);
      const expected = [...CAPABILITIES.keys()].filter((n) => n.startsWith(`${area}.`));
      expect(offered.sort()).toEqual(expected.sort());
    }
  });

  it('the broker answers HOST_CALL_DENIED for a granted capability of an unconfigured area', async () => {
    const broker = new HostBroker(salHostTable({ net: all.net! }));
    expect(await codeOf(broker.call(job(['vm.list']), 'vm.list', {}))).toBe('HOST_CALL_DENIED');
    expect(await codeOf(broker.call(job(['nix.generations']), 'nix.generations', { profile: 'p' }))).toBe('HOST_CALL_DENIED');
    // The same calls do reach the SAL once the area is configured.
    const withVm = new HostBroker(salHostTable({ vm: all.vm! }));
    expect(await withVm.call(job(['vm.list']), 'vm.list', {})).toEqual({ vms: [] });
  });

  it('refuses an invalid area configuration when the table is built (CONFIG_INVALID)', () => {
    expect(() => salHostTable({ btrfs: { mount: 'relative/pool' } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => salHostTable({ net: { prefix: 'Bad-Prefix' } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => salHostTable({ vm: { ...all.vm!, stateDir: 'state' } })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });

  it('a call through the broker drives a real VM operation (cloud-hypervisor double): create, boot, serial, info, delete', async () => {
    const broker = new HostBroker(salHostTable({ vm: all.vm! }));
    const caps = ['vm.create', 'vm.boot', 'vm.serial.wait', 'vm.info', 'vm.delete'];
    const name = `vm-${hex}`;
    const spec = { name, vcpus: 1, memoryMiB: 128, kernel: 'vmlinux', cmdline: 'console=ttyS0', disks: [{ path: 'root.img' }] };
    expect(await broker.call(job(caps), 'vm.create', spec)).toEqual({ name, created: true, state: 'created' });
    expect(await broker.call(job(caps), 'vm.create', spec)).toEqual({ name, created: false, state: 'created' });
    expect(await broker.call(job(caps), 'vm.boot', { name })).toEqual({ name, changed: true, state: 'running' });
    expect(await broker.call(job(caps), 'vm.serial.wait', { name, marker: 'CH-DOUBLE-USERSPACE-UP', timeoutMs: 10_000 })).toMatchObject({ found: true });
    const info = (await broker.call(job(caps), 'vm.info', { name })) as { state: string; pid: number };
    expect(info.state).toBe('running');
    expect(existsSync(path.join(root, 'state', name, 'spec.json'))).toBe(true);
    expect(await broker.call(job(caps), 'vm.delete', { name })).toEqual({ name, deleted: true });
    expect(existsSync(path.join(root, 'state', name))).toBe(false);
    // Gone, or a zombie this process has not reaped yet (signal 0 still reaches a zombie).
    expect(processGone(info.pid)).toBe(true);
  });

  it("passes the job's nix pins to the SAL: an unpinned store path is refused, a pinned one goes on to the store", async () => {
    const broker = new HostBroker(salHostTable({ nix: all.nix! }));
    const storePath = `/nix/store/${'0'.repeat(32)}-writ-sal-table-${hex}`;
    const args = { profile: `p${hex}`, path: storePath } as JsonValue;
    expect(await codeOf(broker.call(job(['nix.profile-set']), 'nix.profile-set', args))).toBe('NIX_PATH_NOT_PINNED');
    expect(await codeOf(broker.call(job(['nix.profile-set'], { pins: { nix: ['/nix/store/other'] } }), 'nix.profile-set', args))).toBe('NIX_PATH_NOT_PINNED');
    // Pinned, the same call passes the pin check and fails only because no such path is in the store.
    const pinned = await codeOf(broker.call(job(['nix.profile-set'], { pins: { nix: [storePath] } }), 'nix.profile-set', args));
    expect(pinned).not.toBe('NIX_PATH_NOT_PINNED');
    expect(pinned).toMatch(/^(RESOURCE_NOT_FOUND|TOOL_MISSING|COMMAND_FAILED)$/);
  });
});

describe('docs/sal.md', () => {
  it('lists every capability in the registry with its dangerous flag', async () => {
    const doc = await readFile(DOCS, 'utf8');
    for (const [name, spec] of CAPABILITIES) {
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${name}\` |`));
      expect(row, `docs/sal.md has no row for ${name}`).toBeDefined();
      const cells = row!.split('|').map((c) => c.trim());
      expect(cells[2], `${name}: the dangerous column`).toBe(spec.dangerous ? 'yes' : 'no');
    }
  });
});

function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}
