// The iPXE boot path over HTTP (no VM): GET /boot/ipxe?mac=… answers each machine's script without a token,
// the kernel and initramfs are served from the image folder ($WRIT_BOOT_IMAGE) only while they match its
// manifest, and `writ nodes reinstall|rescue|unrescue` change a registered machine's answer and move it
// through the lifecycle as it boots and registers again. Node agents register over HTTP with their own keys;
// the image folder holds stand-in kernel and initramfs bytes (the QEMU test, boot-ipxe.root.test.ts, boots
// real ones).
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAYLOAD_TYPES, b64url, encodePublicKeyFile, type NodeInventory } from '@writ/protocol';
import { NodeAgent, loadNodeIdentity } from '@writ/runner';
import { runCli } from '@writ/cli';
import { bootCmdline, bootModeOf, parseBootCmdline } from '../efi-image/src/boot-config.ts';
import { ipxeChainScript } from '../efi-image/src/ipxe.ts';
import { freePort, startWrit, until } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let dir = '';
let imageDir = '';
let cmdline = '';
const token = randomBytes(32).toString('base64url');
const GiB = 2 ** 30;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const files: Record<'kernel' | 'initramfs', Buffer> = { kernel: randomBytes(3 * 2 ** 20 + 17), initramfs: randomBytes(5 * 2 ** 20 + 3) };
const savedEnv = process.env.WRIT_BOOT_IMAGE;

const MAC_NEW = '52:54:00:b0:07:01';
const MAC_A = '52:54:00:b0:07:0a';
const MAC_A2 = '52:54:00:b0:07:0b';

function inventory(macs: string[]): NodeInventory {
  return {
    type: PAYLOAD_TYPES.nodeInventory,
    diskless: false,
    dmi: { vendor: 'QEMU', product: 'Standard PC (Q35 + ICH9, 2009)', serial: 'SN-IPXE', uuid: null },
    cpu: { model: 'QEMU Virtual CPU', threads: 2 },
    memoryBytes: 2 * GiB,
    nics: macs.map((mac, i) => ({ name: `eth${i}`, mac, driver: 'virtio_net', speedMbps: 10_000, carrier: true })),
    disks: [{ name: 'vda', sizeBytes: 20 * GiB, model: null, serial: 'IPXE-DISK', wwn: null, byId: ['virtio-IPXE-DISK'], rotational: false }],
  };
}

async function agentFor(id: string, macs: string[]): Promise<NodeAgent> {
  const identity = await loadNodeIdentity(path.join(dir, id), id);
  return new NodeAgent({
    coordUrl: s.url,
    identity,
    labels: {},
    version: '0.1.0',
    enrollmentToken: null,
    inventory: async () => inventory(macs) as never,
    health: async () => ({ healthy: true, problems: [], load1: 0, memAvailableBytes: GiB, diskFreeBytes: 10 * GiB, runningJobs: 0 }),
  });
}

const cli = async (...argv: string[]) => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    argv,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_COORD: s.url, WRIT_TOKEN: s.token }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
};

/** Fetched as firmware does: no Authorization header. */
async function boot(query: string): Promise<{ status: number; text: string; body: any }> {
  const res = await fetch(`${s.url}/boot/ipxe${query}`);
  const text = await res.text();
  return { status: res.status, text, body: text.startsWith('{') ? JSON.parse(text) : null };
}

/** The answer the script defaults to, and the kernel line of each netboot entry it offers. */
function parseScript(text: string): { answer: string; kernels: Record<string, string> } {
  expect(text.startsWith('#!ipxe\n')).toBe(true);
  // iPXE's console prints bytes, not UTF-8: the script is ASCII.
  expect(text).toMatch(/^[\x09\x0a\x20-\x7e]*$/);
  const answer = /^choose --default (\w+) --timeout \d+ target/m.exec(text)?.[1] ?? '';
  const kernels: Record<string, string> = {};
  for (const m of text.matchAll(/^:(install|rescue)\n(?:.*\n){2}kernel \/boot\/vmlinuz (.*) \|\| goto failed$/gm)) kernels[m[1]!] = m[2]!;
  return { answer, kernels };
}

const node = async (id: string) => (await s.get(`/v1/nodes/${id}`)).body;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-ipxe-'));
  // Heartbeats every second: a node silent for three of them is unreachable (the runner-lost case below).
  s = await startTestStack({ nodes: [], heartbeatMs: 1000 });
  // An image folder as writ image ipxe leaves it: manifest.json naming the files with their sha256.
  imageDir = path.join(dir, 'image');
  await rm(imageDir, { recursive: true, force: true });
  await mkdir(imageDir);
  cmdline = `${bootCmdline({ coordUrl: s.url, redisUrl: s.redisUrl, clusterId: s.clusterId, token, adminKeys: [b64url(s.admin.publicKey)], adminThreshold: 1 })} console=ttyS0`;
  await writeFile(path.join(imageDir, 'vmlinuz'), files.kernel);
  await writeFile(path.join(imageDir, 'initramfs.img'), files.initramfs);
  const art = (file: string, b: Buffer) => ({ file, bytes: b.length, sha256: sha256(b) });
  await writeFile(
    path.join(imageDir, 'manifest.json'),
    JSON.stringify({
      image: 'writ-node',
      sourceDateEpoch: 1_704_067_200,
      cmdline,
      artifacts: { kernel: art('vmlinuz', files.kernel), initramfs: art('initramfs.img', files.initramfs) },
    }),
  );
  // The coord reads WRIT_BOOT_IMAGE at each request; this test's coord runs in this process.
  process.env.WRIT_BOOT_IMAGE = imageDir;
}, 120_000);

afterAll(async () => {
  if (savedEnv === undefined) delete process.env.WRIT_BOOT_IMAGE;
  else process.env.WRIT_BOOT_IMAGE = savedEnv;
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('GET /boot/ipxe (no token)', () => {
  it('an unknown MAC gets the install answer: the node image with the image command line, marked writ.boot=enroll (nobody ordered a wipe)', async () => {
    const r = await boot(`?mac=${MAC_NEW}`);
    expect(r.status).toBe(200);
    const { answer, kernels } = parseScript(r.text);
    expect(answer).toBe('install');
    expect(Object.keys(kernels).sort()).toEqual(['install', 'rescue']);
    // The node reads these words the way the image's own parser does: same config, and the boot mode.
    const words = kernels.install!;
    expect(words.startsWith('initrd=initramfs.img ')).toBe(true);
    expect(parseBootCmdline(words)).toMatchObject({ coordUrl: s.url, token });
    // Not `install`: that word lets the node's install plan wipe the plan's disk, which only an operator orders.
    expect(bootModeOf(words)).toBe('enroll');
    expect(bootModeOf(kernels.rescue!)).toBe('rescue');
    expect(bootModeOf(cmdline)).toBe('normal');
    expect(r.text).toContain('initrd /boot/initramfs.img || goto failed');
    // The other spellings of a MAC iPXE can send (hyphens, no separators, upper case, %-encoded colons).
    for (const q of ['52-54-00-B0-07-01', '525400B00701', encodeURIComponent(MAC_NEW)]) {
      const again = await boot(`?mac=${q}`);
      expect(again.status).toBe(200);
      expect(again.text).toContain(`for ${MAC_NEW}`);
    }
  });

  it('a malformed or missing MAC is refused with BAD_REQUEST naming the field; unknown parameters with UNKNOWN_FIELD', async () => {
    for (const q of ['?mac=zz:54:00:b0:07:01', '?mac=52:54:00:b0:07', '?mac=52:54-00:b0:07:01', '', '?mac=', `?mac=${'a'.repeat(65)}`]) {
      const r = await boot(q);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code, q).toBe('BAD_REQUEST');
      if (q !== `?mac=${'a'.repeat(65)}`) expect(r.body.error.details, q).toEqual({ field: 'mac' });
    }
    const extra = await boot(`?mac=${MAC_NEW}&arch=x86_64`);
    expect(extra.status).toBe(400);
    expect(extra.body.error.code).toBe('UNKNOWN_FIELD');
  });

  it('serves the kernel and initramfs without a token, with the manifest sha256, and refuses them once a file no longer matches', async () => {
    for (const [route, which] of [
      ['/boot/vmlinuz', 'kernel'],
      ['/boot/initramfs.img', 'initramfs'],
    ] as const) {
      const res = await fetch(`${s.url}${route}`);
      expect(res.status, route).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      expect(sha256(body)).toBe(sha256(files[which]));
      expect(res.headers.get('x-writ-sha256')).toBe(sha256(files[which]));
      expect(Number(res.headers.get('content-length'))).toBe(files[which].length);
    }
    // Same size, one byte changed: the coord hashes it again (its mtime moved) and refuses to serve it.
    const tampered = Buffer.from(files.initramfs);
    tampered[1000] = tampered[1000]! ^ 0xff;
    await writeFile(path.join(imageDir, 'initramfs.img'), tampered);
    for (const route of ['/boot/initramfs.img', `/boot/ipxe?mac=${MAC_NEW}`]) {
      const bad = await fetch(`${s.url}${route}`);
      expect(bad.status, route).toBe(500);
      const e = ((await bad.json()) as { error: { code: string; message: string } }).error;
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toContain('initramfs.img has sha256');
    }
    await writeFile(path.join(imageDir, 'initramfs.img'), files.initramfs);
    expect((await fetch(`${s.url}/boot/initramfs.img`)).status).toBe(200);
  });

  it('without an image folder the netboot answers and files are NOT_READY; writ image ipxe chains this route', async () => {
    delete process.env.WRIT_BOOT_IMAGE;
    try {
      for (const route of ['/boot/vmlinuz', '/boot/initramfs.img', `/boot/ipxe?mac=${MAC_NEW}`]) {
        const res = await fetch(`${s.url}${route}`);
        expect(res.status, route).toBe(503);
        expect(((await res.json()) as { error: { code: string; message: string } }).error).toMatchObject({
          code: 'NOT_READY',
          message: expect.stringContaining('WRIT_BOOT_IMAGE'),
        });
      }
    } finally {
      process.env.WRIT_BOOT_IMAGE = imageDir;
    }
    // The script writ image ipxe writes asks for exactly this route, with iPXE's MAC setting.
    const chain = ipxeChainScript({ coordUrl: `${s.url}/` });
    expect(chain).toContain(`chain ${s.url}/boot/ipxe?mac=\${net0/mac} || goto answered`);
    expect(chain).toMatch(/^:answered\niseq \$\{writ-answer\} local && goto local \|\|\n/m);
    expect(chain).toMatch(/^:local\nexit 1\n/m);
    expect(() => ipxeChainScript({ coordUrl: 'ftp://x' })).toThrow(/http or https/);
  });
});

describe('writ coord --boot-image DIR', () => {
  it('serves that folder with no WRIT_BOOT_IMAGE in its environment, and refuses a folder without a manifest before it starts', async () => {
    const pub = path.join(dir, 'coord-admin.pub');
    await writeFile(pub, encodePublicKeyFile(s.admin.publicKey));
    const env = { WRIT_TOKEN: 'boot-image-flag-token', WRIT_SUPERVISOR_TOKEN: 'unused', WRIT_HOME: path.join(dir, 'flag-home'), WRIT_BOOT_IMAGE: '' };
    const port = await freePort();
    const coord = await startWrit(
      ['coord', '--admin-key', pub, '--listen', `127.0.0.1:${port}`, '--state', path.join(dir, 'flag-coord'), '--boot-image', imageDir],
      env,
    );
    try {
      const res = await fetch(`http://127.0.0.1:${port}/boot/vmlinuz`);
      expect(res.status).toBe(200);
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(files.kernel));
      const script = await (await fetch(`http://127.0.0.1:${port}/boot/ipxe?mac=${MAC_NEW}`)).text();
      expect(parseScript(script).answer).toBe('install');
    } finally {
      coord.child.kill('SIGTERM');
      await coord.exited();
    }
    // A folder with no manifest.json: refused at start, naming the flag, before the ledger opens.
    const empty = path.join(dir, 'no-image');
    await mkdir(empty, { recursive: true });
    const out: string[] = [];
    const code = await runCli(
      ['coord', '--admin-key', pub, '--listen', '127.0.0.1:0', '--state', path.join(dir, 'flag-coord-2'), '--boot-image', empty],
      { out: (l) => out.push(l), err: (l) => out.push(l) },
      { env: { ...process.env, ...env }, now: () => Math.floor(Date.now() / 1000) },
    );
    expect(code).not.toBe(0);
    expect(out.join('\n')).toMatch(/CONFIG_INVALID.*--boot-image .*no-image has no manifest.json/);
  }, 60_000);
});

describe('reinstall and rescue set the next iPXE boot; the lifecycle records it', () => {
  const id = 'ipxe-a';
  let agent: NodeAgent;

  it('a registered machine boots from its local disk; an operator-accepted one becomes active', async () => {
    agent = await agentFor(id, [MAC_A, MAC_A2]);
    expect((await agent.register()).state).toBe('inspected');
    for (const mac of [MAC_A, MAC_A2]) {
      const { answer, kernels } = parseScript((await boot(`?mac=${mac}`)).text);
      expect(answer).toBe('local');
      // A person at the console may still pick the image from the menu.
      expect(Object.keys(kernels).sort()).toEqual(['install', 'rescue']);
    }
    // Local: back to the firmware; writ-answer tells a chaining script (boot.ipxe) to exit too.
    expect((await boot(`?mac=${MAC_A}`)).text).toMatch(/^:local\nset writ-answer local\n.*\nexit 1$/m);
    // The answer names no node: the route is public.
    expect((await boot(`?mac=${MAC_A}`)).text).not.toContain(id);
    expect((await cli('nodes', 'accept', id)).code).toBe(0);
    await agent.heartbeat();
    expect((await node(id)).state).toBe('active');
  });

  it('writ nodes reinstall: install answer for every MAC; installing once the install boot is fetched, not before; installed when it registers again, then active', async () => {
    const r = await cli('nodes', 'reinstall', id, '--reason', 'new disk layout');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`node ${id}: reinstall → reprovisioning`);
    expect(r.out).toContain(`next iPXE boot of ${MAC_A}, ${MAC_A2}: install`);
    const shown = await cli('nodes', 'show', id);
    expect(shown.out).toMatch(new RegExp(`next boot ${MAC_A}: install \\(iPXE\\), set by operator:reprovision`));
    // The agent restarting (no reboot) is not the install: the answer stays, the node stays reprovisioning.
    expect((await agent.register()).state).toBe('reprovisioning');
    const ordered = parseScript((await boot(`?mac=${MAC_A2}`)).text);
    expect(ordered.answer).toBe('install');
    // The reinstall an operator ordered is the one boot whose install plan may wipe the plan's disk.
    expect(bootModeOf(ordered.kernels.install!)).toBe('install');
    const n = await node(id);
    expect(n.state).toBe('installing');
    expect(n.transitions.at(-1)).toMatchObject({ from: 'reprovisioning', to: 'installing', event: 'install-started', actor: `ipxe:${MAC_A2}` });
    // Back from the install boot with its identity: installed; the answer goes back to local for both MACs.
    expect((await agent.register()).state).toBe('installed');
    for (const mac of [MAC_A, MAC_A2]) expect(parseScript((await boot(`?mac=${mac}`)).text).answer).toBe('local');
    const enrolled = (await s.get(`/v1/enroll/nodes/${id}`)).body;
    expect(enrolled.boot.map((b: { mac: string; answer: string; setBy: string }) => [b.mac, b.answer, b.setBy])).toEqual([
      [MAC_A, 'local', `node:${id}`],
      [MAC_A2, 'local', `node:${id}`],
    ]);
    await agent.heartbeat();
    const after = await node(id);
    expect(after.state).toBe('active');
    expect(after.transitions.slice(-4).map((t: { event: string }) => t.event)).toEqual(['reprovision', 'install-started', 'install-done', 'activate']);
  });

  it('writ nodes rescue: the rescue answer (writ.boot=rescue) until unrescue, through registrations; unrescue brings back the state and local', async () => {
    const r = await cli('nodes', 'rescue', id);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`next iPXE boot of ${MAC_A}, ${MAC_A2}: rescue`);
    const script = parseScript((await boot(`?mac=${MAC_A}`)).text);
    expect(script.answer).toBe('rescue');
    expect(bootModeOf(script.kernels.rescue!)).toBe('rescue');
    // The machine boots into rescue and its agent registers: still rescue, and so is its next boot.
    expect((await agent.register()).state).toBe('rescue');
    expect(parseScript((await boot(`?mac=${MAC_A}`)).text).answer).toBe('rescue');
    expect((await node(id)).state).toBe('rescue');
    const back = await cli('nodes', 'unrescue', id, '--json');
    expect(back.code, back.err).toBe(0);
    expect(JSON.parse(back.out)).toMatchObject({ state: 'active', boot: { answer: 'local', macs: [MAC_A, MAC_A2] } });
    expect(parseScript((await boot(`?mac=${MAC_A}`)).text).answer).toBe('local');
  });

  it('a machine silent past the unreachable window while it reboots into its reinstall fails; fetching the install boot resumes the order; an accept cancels one', async () => {
    expect((await cli('nodes', 'reinstall', id)).code).toBe(0);
    // Still running after the order (it heartbeats), then rebooting: silent for longer than 3 heartbeats.
    await agent.heartbeat();
    await until('runner-lost', async () => ((await node(id)).state === 'failed' ? true : undefined), 30_000);
    expect(parseScript((await boot(`?mac=${MAC_A}`)).text).answer).toBe('install');
    const n = await node(id);
    expect(n.state).toBe('installing');
    expect(n.transitions.slice(-3).map((t: { event: string; actor: string }) => [t.event, t.actor])).toEqual([
      ['runner-lost', 'coord'],
      ['install', 'operator:reprovision'],
      ['install-started', `ipxe:${MAC_A}`],
    ]);
    expect((await agent.register()).state).toBe('installed');
    await agent.heartbeat();
    expect((await node(id)).state).toBe('active');
    // Once more, and this time the operator takes the failed node back instead: the pending install is gone.
    expect((await cli('nodes', 'reinstall', id)).code).toBe(0);
    await agent.heartbeat();
    await until('runner-lost again', async () => ((await node(id)).state === 'failed' ? true : undefined), 30_000);
    expect((await cli('nodes', 'accept', id)).code).toBe(0);
    expect((await s.get(`/v1/enroll/nodes/${id}`)).body.boot).toEqual([]);
    expect(parseScript((await boot(`?mac=${MAC_A}`)).text).answer).toBe('local');
    expect((await node(id)).state).toBe('commissioned');
  });

  it('a reinstall the lifecycle refuses sets no answer; a node without a MAC gets none either', async () => {
    const other = await agentFor('ipxe-b', []);
    await other.register();
    const refused = await cli('nodes', 'reinstall', 'ipxe-b');
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('TRANSITION_NOT_ALLOWED');
    expect((await cli('nodes', 'accept', 'ipxe-b')).code).toBe(0);
    const none = await cli('nodes', 'reinstall', 'ipxe-b');
    expect(none.code, none.err).toBe(0);
    expect(none.out).toContain('its inventory lists no MAC, so no iPXE answer was set');
    expect((await s.get('/v1/enroll/nodes/ipxe-b')).body.boot).toEqual([]);
    // The image manifest is untouched by all of this.
    expect(JSON.parse(await readFile(path.join(imageDir, 'manifest.json'), 'utf8')).cmdline).toBe(cmdline);
  });
});
