// The VM SAL against the cloud-hypervisor double (cloud-hypervisor cannot be installed here): the driver
// launches the double as its VMM binary, drives it over the Unix-socket REST API, and every request body it
// sent is validated against the published OpenAPI schemas (stricter than the spec: unknown fields are
// refused). Also: argument confinement (X6), the qemu argv builder and serial marker search, no root needed.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvModule from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { capability, errorCodeOf } from '@writ/protocol';
import { referenceFile } from './helpers/reference.ts';
import {
  CloudHypervisorDriver,
  qemuCommandLine,
  resolveVmConfig,
  VM_OPERATIONS,
  vmPaths,
  waitForSerialMarker,
  type ResolvedVmSpec,
  type VmConfig,
} from '../src/vm/index.ts';
import { isOurProcess } from '../src/vm/process.ts';

const Ajv = (AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule;
const OPENAPI = referenceFile('cloud-hypervisor-openapi.yaml');
const DOUBLE = fileURLToPath(new URL('./doubles/cloud-hypervisor-double.ts', import.meta.url));
const TSX_LOADER = fileURLToPath(new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url));

const hex = randomBytes(2).toString('hex');
let root = '';
let config: VmConfig;
let requestLog = '';
const call = async (cap: string, args: Record<string, unknown>): Promise<any> => {
  const op = VM_OPERATIONS.find((o) => o.capability === cap);
  if (!op) throw new Error(`no operation ${cap}`);
  return op.run(args, { config });
};
const failure = async (p: Promise<unknown>): Promise<{ code: string | undefined; details: any }> =>
  p.then(
    () => ({ code: undefined, details: undefined }),
    (e: unknown) => ({ code: errorCodeOf(e) ?? String(e), details: (e as { details?: unknown }).details }),
  );
const codeOf = async (p: Promise<unknown>): Promise<string | undefined> => (await failure(p)).code;

/** OpenAPI 3.0 component schemas made strict (no unknown fields), with its integer formats. */
function openApiValidators(): { bodySchemaFor: (endpoint: string) => string | null; validate: (schema: string, body: unknown) => string | null } {
  const doc = parseYaml(readFileSync(OPENAPI, 'utf8')) as { paths: Record<string, any>; components: { schemas: Record<string, any> } };
  const strict = (s: any): any => {
    if (Array.isArray(s)) return s.map(strict);
    if (!s || typeof s !== 'object') return s;
    const out: any = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, strict(v)]));
    if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
    return out;
  };
  const ajv = new Ajv({ strict: false, allErrors: true });
  const ranges: Record<string, [number, number]> = {
    int8: [-128, 127],
    uint8: [0, 255],
    int16: [-32768, 32767],
    uint16: [0, 65535],
    int32: [-(2 ** 31), 2 ** 31 - 1],
    uint32: [0, 2 ** 32 - 1],
    int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
    uint64: [0, Number.MAX_SAFE_INTEGER],
  };
  for (const [name, [lo, hi]] of Object.entries(ranges)) ajv.addFormat(name, { type: 'number', validate: (n: number) => n >= lo && n <= hi });
  ajv.addSchema({ $id: 'ch', components: { schemas: strict(doc.components.schemas) } });
  return {
    bodySchemaFor(endpoint) {
      const op = doc.paths[`/${endpoint}`]?.put ?? doc.paths[`/${endpoint}`]?.get;
      if (!op) throw new Error(`endpoint ${endpoint} is not in the published API`);
      const ref = op.requestBody?.content?.['application/json']?.schema?.$ref as string | undefined;
      return ref ? ref.replace('#/components/schemas/', '') : null;
    },
    validate(schema, body) {
      const v = ajv.getSchema(`ch#/components/schemas/${schema}`);
      if (!v) throw new Error(`no schema ${schema}`);
      return v(body) ? null : ajv.errorsText(v.errors);
    },
  };
}

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'wvd-'));
  await mkdir(path.join(root, 'images'));
  await mkdir(path.join(root, 'boot'));
  await writeFile(path.join(root, 'boot', 'vmlinux'), 'not really a kernel');
  await writeFile(path.join(root, 'images', 'root.img'), Buffer.alloc(4096));
  await writeFile(path.join(root, 'images', 'data.img'), Buffer.alloc(4096));
  await symlink('/etc', path.join(root, 'images', 'escape'));
  // The driver runs this like the real binary; the request log reaches the double through the environment.
  const binary = path.join(root, 'cloud-hypervisor');
  await writeFile(
    binary,
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} --import ${JSON.stringify(`file://${TSX_LOADER}`)} ${JSON.stringify(DOUBLE)} "$@"\n`,
  );
  await chmod(binary, 0o755);
  requestLog = path.join(root, 'requests.jsonl');
  await appendFile(requestLog, '');
  process.env.CH_DOUBLE_REQUEST_LOG = requestLog;
  config = {
    driver: 'cloud-hypervisor',
    stateDir: path.join(root, 'state'),
    imagesRoot: path.join(root, 'images'),
    bootRoot: path.join(root, 'boot'),
    cloudHypervisorBinary: binary,
    apiTimeoutMs: 5000,
  };
});

afterAll(async () => {
  // Stop any double this file started (by the pid in its VM's pid file) before removing the tree.
  for (const name of [`vm-${hex}`, `bad-${hex}`]) {
    const pidFile = path.join(config.stateDir, name, 'vmm.pid');
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
  await rm(root, { recursive: true, force: true });
});

const name = `vm-${hex}`;
const spec = () => ({
  name,
  vcpus: 1,
  maxVcpus: 4,
  memoryMiB: 256,
  maxMemoryMiB: 1024,
  kernel: 'vmlinux',
  cmdline: 'console=ttyS0 root=/dev/vda',
  disks: [{ path: 'root.img' }],
  nics: [{ tap: `tap-${hex}`, mac: '52:54:00:AB:CD:01' }],
});

describe('vm SAL with the cloud-hypervisor driver (against the API double)', () => {
  it('creates once: a second identical create is created:false, a different spec is RESOURCE_CONFLICT', async () => {
    expect(await call('vm.create', spec())).toEqual({ name, created: true, state: 'created' });
    expect(await call('vm.create', spec())).toEqual({ name, created: false, state: 'created' });
    const conflict = await failure(call('vm.create', { ...spec(), vcpus: 2 }));
    expect(conflict.code).toBe('RESOURCE_CONFLICT');
    expect(conflict.details.differing).toEqual(['vcpus']);
    const info = await call('vm.info', { name });
    expect(info).toMatchObject({ name, driver: 'cloud-hypervisor', state: 'created' });
    expect(info.spec.disks).toEqual([{ id: 'disk0', path: 'root.img', readonly: false }]);
    expect(info.spec.nics).toEqual([{ id: 'net0', tap: `tap-${hex}`, mac: '52:54:00:ab:cd:01' }]);
    for (const f of ['api.sock', 'vmm.pid', 'spec.json']) expect(existsSync(path.join(config.stateDir, name, f))).toBe(true);
  });

  it('boots, shows the boot on the serial log, and boot again changes nothing', async () => {
    expect(await call('vm.boot', { name })).toEqual({ name, changed: true, state: 'running' });
    expect(await call('vm.serial.wait', { name, marker: 'CH-DOUBLE-USERSPACE-UP', timeoutMs: 5000 })).toMatchObject({ found: true });
    expect(await call('vm.boot', { name })).toEqual({ name, changed: false, state: 'running' });
  });

  it('pauses and resumes idempotently, and refuses boot and reboot while paused (VM_STATE_INVALID)', async () => {
    expect(await call('vm.pause', { name })).toEqual({ name, changed: true, state: 'paused' });
    expect(await call('vm.pause', { name })).toEqual({ name, changed: false, state: 'paused' });
    expect(await codeOf(call('vm.boot', { name }))).toBe('VM_STATE_INVALID');
    expect(await codeOf(call('vm.reboot', { name }))).toBe('VM_STATE_INVALID');
    expect(await call('vm.resume', { name })).toEqual({ name, changed: true, state: 'running' });
    expect(await call('vm.resume', { name })).toEqual({ name, changed: false, state: 'running' });
  });

  it('hot-plugs a disk and a NIC once each and removes a device by id', async () => {
    expect(await call('vm.disk.add', { name, disk: { id: 'data', path: 'data.img', readonly: true } })).toEqual({
      name,
      id: 'data',
      added: true,
      hotplugged: true,
    });
    expect(await call('vm.disk.add', { name, disk: { id: 'data', path: 'data.img', readonly: true } })).toEqual({
      name,
      id: 'data',
      added: false,
      hotplugged: false,
    });
    expect(await codeOf(call('vm.disk.add', { name, disk: { id: 'data', path: 'root.img' } }))).toBe('RESOURCE_CONFLICT');
    expect(await call('vm.net.add', { name, nic: { tap: `tap2-${hex}`, mac: '52:54:00:ab:cd:02' } })).toMatchObject({ added: true, hotplugged: true });
    expect(await call('vm.net.add', { name, nic: { tap: `tap2-${hex}`, mac: '52:54:00:ab:cd:02' } })).toMatchObject({ added: false });
    expect(await call('vm.device.remove', { name, id: 'data' })).toEqual({ name, id: 'data', removed: true, hotplugged: true });
    expect(await call('vm.device.remove', { name, id: 'data' })).toMatchObject({ removed: false });
    const info = await call('vm.info', { name });
    expect(info.spec.disks.map((d: { id: string }) => d.id)).toEqual(['disk0']);
    expect(info.spec.nics).toHaveLength(2);
  });

  it('resizes live within the spec maxima and refuses to go past them', async () => {
    expect(await call('vm.resize', { name, vcpus: 2, memoryMiB: 512 })).toEqual({ name, vcpus: 2, memoryMiB: 512, changed: true, live: true });
    expect(await call('vm.resize', { name, vcpus: 2 })).toMatchObject({ changed: false });
    expect(await codeOf(call('vm.resize', { name, vcpus: 5 }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(call('vm.resize', { name }))).toBe('SAL_INVALID_ARGUMENT');
  });

  it('snapshots a running VM (pausing around it) once, and restores it', async () => {
    const snap = await call('vm.snapshot', { name, snapshot: 'one' });
    expect(snap).toMatchObject({ created: true });
    expect(existsSync(path.join(snap.path, 'config.json'))).toBe(true);
    expect(existsSync(path.join(snap.path, 'writ-spec.json'))).toBe(true);
    expect(await call('vm.snapshot', { name, snapshot: 'one' })).toMatchObject({ created: false });
    expect((await call('vm.info', { name })).state).toBe('running');
    expect(await call('vm.restore', { name, snapshot: 'one', resume: true })).toEqual({ name, snapshot: 'one', state: 'running' });
    expect(await codeOf(call('vm.restore', { name, snapshot: 'none' }))).toBe('RESOURCE_NOT_FOUND');
  });

  it('reboots and shuts down through the power button, then refuses reboot when down', async () => {
    expect(await call('vm.reboot', { name })).toEqual({ name, state: 'running' });
    expect(await call('vm.shutdown', { name, timeoutMs: 5000 })).toEqual({ name, changed: true, graceful: true, state: 'shutdown' });
    expect(await call('vm.shutdown', { name })).toMatchObject({ changed: false });
    expect(await codeOf(call('vm.reboot', { name }))).toBe('VM_STATE_INVALID');
    expect(await call('vm.boot', { name })).toMatchObject({ changed: true, state: 'running' });
    expect(await call('vm.shutdown', { name, graceful: false })).toEqual({ name, changed: true, graceful: false, state: 'shutdown' });
  });

  it('lists VMs and deletes one: its VMM process exits and its state dir goes; a second delete is a no-op', async () => {
    expect((await call('vm.list', {})).vms).toEqual([{ name, driver: 'cloud-hypervisor', state: 'shutdown' }]);
    const pid = Number(await readFile(path.join(config.stateDir, name, 'vmm.pid'), 'utf8'));
    expect(await call('vm.delete', { name })).toEqual({ name, deleted: true });
    expect(existsSync(path.join(config.stateDir, name))).toBe(false);
    // Gone, or a zombie this process has not reaped yet (signal 0 still reaches a zombie).
    expect(await isOurProcess(pid, '')).toBe(false);
    expect(await call('vm.delete', { name })).toEqual({ name, deleted: false });
    expect(await codeOf(call('vm.boot', { name }))).toBe('RESOURCE_NOT_FOUND');
  });

  it('surfaces API refusals as HYPERVISOR_API_ERROR with the message array, and a dead socket as HYPERVISOR_UNREACHABLE', async () => {
    const resolved = resolveVmConfig(config);
    const paths = vmPaths(resolved, `bad-${hex}`);
    await mkdir(paths.dir, { recursive: true });
    const vmSpec: ResolvedVmSpec = {
      name: `bad-${hex}`,
      vcpus: 1,
      maxVcpus: 1,
      memoryMiB: 64,
      maxMemoryMiB: 64,
      kernel: path.join(root, 'boot', 'vmlinux'),
      initramfs: null,
      cmdline: null,
      firmware: null,
      disks: [],
      nics: [],
    };
    const driver = new CloudHypervisorDriver();
    const unreachable = await failure(driver.pause({ spec: vmSpec, paths, config: resolved }));
    expect(unreachable.code).toBe('HYPERVISOR_UNREACHABLE');
    await driver.define({ spec: vmSpec, paths, config: resolved });
    await driver.pause({ spec: vmSpec, paths, config: resolved });
    const refused = await failure(driver.pause({ spec: vmSpec, paths, config: resolved }));
    expect(refused.code).toBe('HYPERVISOR_API_ERROR');
    expect(refused.details.status).toBe(500);
    expect(refused.details.messages).toEqual(['Error from API', 'The VM could not be paused', 'Invalid VM state transition: Paused to Paused']);
    await driver.destroy({ spec: vmSpec, paths, config: resolved });
  });

  it('every request body the driver sent matches the published OpenAPI schema', async () => {
    const api = openApiValidators();
    // The validator is not vacuous: a misspelt field and a wrong type are refused.
    expect(api.validate('VmConfig', { payload: {}, cpus: { boot_vcpu: 1, max_vcpus: 1 } })).not.toBeNull();
    expect(api.validate('VmResize', { desired_vcpus: '2' })).not.toBeNull();
    const requests = (await readFile(requestLog, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { method: string; endpoint: string; body: unknown; hasBody: boolean });
    const seen = new Set<string>();
    for (const r of requests) {
      seen.add(r.endpoint);
      const schema = api.bodySchemaFor(r.endpoint);
      if (schema === null) {
        expect(r.hasBody, `${r.endpoint} takes no body`).toBe(false);
        continue;
      }
      expect(api.validate(schema, r.body), `${r.method} ${r.endpoint} ${JSON.stringify(r.body)}`).toBeNull();
    }
    for (const e of [
      'vmm.ping',
      'vm.create',
      'vm.boot',
      'vm.info',
      'vm.pause',
      'vm.resume',
      'vm.add-disk',
      'vm.add-net',
      'vm.remove-device',
      'vm.resize',
      'vm.snapshot',
      'vm.restore',
      'vm.reboot',
      'vm.power-button',
      'vm.shutdown',
      'vm.delete',
      'vmm.shutdown',
    ]) {
      expect(seen, `the driver never called ${e}`).toContain(e);
    }
  });
});

describe('vm SAL arguments (X6) and failures before any VMM starts', () => {
  it('refuses paths outside the roots: .., absolute, symlink escapes and NUL bytes', async () => {
    expect(await codeOf(call('vm.create', { ...spec(), name: `x1-${hex}`, kernel: '../images/root.img' }))).toBe('PATH_ESCAPE');
    expect(await codeOf(call('vm.create', { ...spec(), name: `x2-${hex}`, disks: [{ path: '/etc/passwd' }] }))).toBe('PATH_ESCAPE');
    expect(await codeOf(call('vm.create', { ...spec(), name: `x3-${hex}`, disks: [{ path: 'escape/passwd' }] }))).toBe('PATH_ESCAPE');
    expect(await codeOf(call('vm.create', { ...spec(), name: `x4-${hex}`, disks: [{ path: 'root.img\0x' }] }))).toBe('PATH_ESCAPE');
    expect(await codeOf(call('vm.create', { ...spec(), name: '../etc' }))).toBe('SAL_INVALID_ARGUMENT');
    expect(existsSync(config.stateDir) ? (await call('vm.list', {})).vms : []).toEqual([]);
  });

  it('checks specs: unknown fields, kernel xor firmware, missing images, multicast MACs, duplicate ids', async () => {
    expect(await codeOf(call('vm.create', { ...spec(), name: `y-${hex}`, extra: 1 }))).toBe('UNKNOWN_FIELD');
    expect(await codeOf(call('vm.create', { ...spec(), name: `y-${hex}`, firmware: 'vmlinux' }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(call('vm.create', { ...spec(), name: `y-${hex}`, kernel: 'missing' }))).toBe('RESOURCE_NOT_FOUND');
    expect(await codeOf(call('vm.create', { ...spec(), name: `y-${hex}`, nics: [{ tap: 't0', mac: '01:00:5e:00:00:01' }] }))).toBe('SAL_INVALID_ARGUMENT');
    expect(
      await codeOf(
        call('vm.create', {
          ...spec(),
          name: `y-${hex}`,
          disks: [
            { id: 'a', path: 'root.img' },
            { id: 'a', path: 'data.img' },
          ],
        }),
      ),
    ).toBe('SAL_INVALID_ARGUMENT');
    expect(existsSync(path.join(config.stateDir, `y-${hex}`))).toBe(false);
  });

  it('reports a missing hypervisor binary as TOOL_MISSING and leaves no state dir', async () => {
    const saved = config;
    config = { ...saved, cloudHypervisorBinary: path.join(root, 'no-such-binary') };
    try {
      expect(await codeOf(call('vm.create', { ...spec(), name: `z-${hex}` }))).toBe('TOOL_MISSING');
      expect(existsSync(path.join(config.stateDir, `z-${hex}`))).toBe(false);
    } finally {
      config = saved;
    }
  });

  it('has one operation per vm capability, each with a registered schema', () => {
    const caps = VM_OPERATIONS.map((o) => o.capability);
    expect(caps).toEqual([
      'vm.create',
      'vm.boot',
      'vm.shutdown',
      'vm.reboot',
      'vm.pause',
      'vm.resume',
      'vm.info',
      'vm.delete',
      'vm.disk.add',
      'vm.net.add',
      'vm.device.remove',
      'vm.resize',
      'vm.snapshot',
      'vm.restore',
      'vm.list',
      'vm.serial.wait',
    ]);
    for (const c of caps) expect(capability(c), c).toBeDefined();
    expect(capability('vm.delete')?.dangerous).toBe(true);
    expect(caps.filter((c) => capability(c)?.dangerous)).toEqual(['vm.delete']);
  });
});

describe('qemu argv and serial markers (no VM needed)', () => {
  it('builds the qemu command line with JSON devices, the QMP socket, the serial file and the accelerator', () => {
    const resolved = resolveVmConfig({ driver: 'qemu', stateDir: '/var/lib/writ/vms', imagesRoot: '/var/lib/writ/images' });
    const paths = vmPaths(resolved, 'web1');
    const argv = qemuCommandLine(
      {
        name: 'web1',
        vcpus: 2,
        maxVcpus: 2,
        memoryMiB: 512,
        maxMemoryMiB: 512,
        kernel: '/boot/k',
        initramfs: '/boot/i',
        cmdline: 'console=ttyS0',
        firmware: null,
        disks: [{ id: 'root', path: '/img/a,b.img', readonly: true }],
        nics: [{ id: 'net0', tap: 'tap0', mac: '52:54:00:00:00:01' }],
      },
      paths,
      { accel: 'tcg' },
    );
    const after = (flag: string): string[] => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
    expect(argv[0]).toBe('qemu-system-x86_64');
    expect(after('-accel')).toEqual(['tcg']);
    expect(after('-qmp')).toEqual(['unix:/var/lib/writ/vms/web1/api.sock,server=on,wait=off']);
    expect(after('-chardev')).toEqual(['file,id=serial0,path=/var/lib/writ/vms/web1/serial.log,append=on']);
    expect(after('-pidfile')).toEqual(['/var/lib/writ/vms/web1/vmm.pid']);
    expect(argv).toContain('-daemonize');
    expect(argv).toContain('-S');
    expect(JSON.parse(after('-blockdev')[0]!)).toEqual({
      driver: 'raw',
      'node-name': 'root-blk',
      'read-only': true,
      file: { driver: 'file', filename: '/img/a,b.img' },
    });
    expect(JSON.parse(after('-netdev')[0]!)).toEqual({ type: 'tap', id: 'net0-net', ifname: 'tap0', script: 'no', downscript: 'no' });
    const direct = qemuCommandLine(
      {
        name: 'web1',
        vcpus: 1,
        maxVcpus: 1,
        memoryMiB: 128,
        maxMemoryMiB: 128,
        kernel: '/boot/k',
        initramfs: null,
        cmdline: null,
        firmware: null,
        disks: [],
        nics: [],
      },
      paths,
      { accel: 'kvm', daemonize: false, startPaused: false },
    );
    expect(direct).not.toContain('-daemonize');
    expect(direct).not.toContain('-S');
  });

  it('finds a marker split across reads, starts after the boot offset, and times out with VM_SERIAL_TIMEOUT', async () => {
    const log = path.join(root, 'serial-test.log');
    await writeFile(log, 'MARKER from an earlier boot\n');
    const offset = (await readFile(log)).length;
    const waiting = waitForSerialMarker(log, 'MARKER', { fromOffset: offset, timeoutMs: 3000, pollMs: 20 });
    await new Promise((r) => setTimeout(r, 100));
    await appendFile(log, 'booting... MAR');
    await new Promise((r) => setTimeout(r, 100));
    await appendFile(log, 'KER\n');
    const found = await waiting;
    expect(found.offset).toBe(offset + 'booting... '.length);
    expect(await codeOf(waitForSerialMarker(log, 'ABSENT', { fromOffset: 0, timeoutMs: 100, pollMs: 20 }))).toBe('VM_SERIAL_TIMEOUT');
  });
});
