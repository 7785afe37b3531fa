// `npm run bench -- boot` (as root): power-on of a QEMU machine (q35 + OVMF, TCG unless a KVM probe boot
// works) from the USB image to `registered` and to its first job succeeded, with the image's sizes and how
// the time splits: firmware (power-on to the kernel's first line), kernel (to /init), init (drivers, DHCP,
// state partition), Node start (to the agent's first line), registration. Last line: one JSON object.
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startStack } from '@writ/cli';
import { PAYLOAD_TYPES, b64url, buildJobPayload, encodeEnvelope, encodeJobPayload, generateKeyPair, signEnvelope } from '@writ/protocol';
import { buildUsb } from '../efi-image/src/build.ts';
import { HOST_FROM_GUEST, pickAccel, startMachine } from '../tests/helpers/qemu.ts';

const MiB = 2 ** 20;
const work = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-boot-'));
const admin = generateKeyPair();
const stack = await startStack({ admin, stateDir: path.join(work, 'stack'), nodes: [], heartbeatMs: 2000 });
const hex = randomBytes(3).toString('hex');
const mac = `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
const api = async (method: string, route: string, body?: unknown) => {
  const res = await fetch(`${stack.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${stack.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return (await res.json()) as any;
};
try {
  const rule = await api('POST', '/v1/enroll/rules', {
    name: 'bench',
    match: { macs: [mac] },
    assign: { class: 'bench', pool: null, labels: { bench: 'boot' }, hostname: null },
    autoAccept: true,
    token: true,
  });
  const tb = Date.now();
  const manifest = await buildUsb({
    outDir: path.join(work, 'img'),
    boot: {
      coordUrl: stack.url.replace('127.0.0.1', HOST_FROM_GUEST),
      redisUrl: stack.redisUrl.replace('127.0.0.1', HOST_FROM_GUEST),
      clusterId: stack.clusterId,
      token: rule.token,
      adminKeys: [b64url(admin.publicKey)],
      adminThreshold: 1,
    },
    extraCmdline: 'console=ttyS0',
  });
  const buildS = (Date.now() - tb) / 1000;
  const kernel = path.join(
    '/boot',
    readdirSync('/boot')
      .filter((f) => f.startsWith('vmlinuz-'))
      .sort()
      .at(-1)!,
  );
  const accel = await pickAccel(kernel);
  // Two CPUs, as every figure in docs/performance.md was measured (the tests' TCG machines have one).
  const m = startMachine({
    name: 'bench-boot',
    disks: [{ file: path.join(work, 'img/writ-usb.img'), serial: 'WRIT-BENCH' }],
    mac,
    accel,
    cpus: 2,
    workDir: work,
  });
  const at: Record<string, number> = {};
  const mark = (name: string, re: RegExp) => m.waitFor(re, 600_000).then(() => (at[name] = (Date.now() - m.startedAt) / 1000));
  const marks = Promise.all([
    mark('kernel', /Linux version/),
    mark('init', /writ-boot: init started/),
    mark('network', /writ-boot: network up/),
    mark('state', /writ-boot: (state partition \S+ mounted|no state partition)/),
    mark('agent', /writ-boot: starting the node agent/),
    mark('node', /writ-boot: identity/),
    mark('registered', /writ-boot: registered/),
    mark('runner', /writ-boot: runner started/),
  ]);
  await marks;
  const job = buildJobPayload({
    source: readFileSync(path.resolve(import.meta.dirname, '../scripts/examples/hello.js'), 'utf8'),
    target: { selector: { bench: 'boot' } },
    caps: ['host.facts'],
    aud: stack.clusterId,
    args: { name: 'bench' } as never,
    limits: { timeoutMs: 60_000, memoryMiB: 64 },
  });
  const env = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin]));
  await fetch(`${stack.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.token}` }, body: env });
  for (;;) {
    const j = await stack.ledger.getJob(job.id);
    if (j && ['succeeded', 'failed', 'refused'].includes(j.status)) {
      if (j.status !== 'succeeded') throw new Error(`the first job ${j.status}: ${j.errorMessage}`);
      at.firstJob = (Date.now() - m.startedAt) / 1000;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await m.stop();
  const r = (x: number) => Math.round(x * 10) / 10;
  const split = {
    firmware_s: r(at.kernel!),
    kernel_s: r(at.init! - at.kernel!),
    init_s: r(at.agent! - at.init!),
    node_start_s: r(at.node! - at.agent!),
    registration_s: r(at.registered! - at.node!),
    runner_start_s: r(at.runner! - at.registered!),
    first_job_s: r(at.firstJob - at.runner!),
  };
  console.log(`accel ${accel}; image built in ${buildS.toFixed(1)} s`);
  console.log(
    `UKI ${(manifest.artifacts.uki!.bytes / MiB).toFixed(1)} MiB, initramfs ${(manifest.artifacts.initramfs!.bytes / MiB).toFixed(1)} MiB, kernel ${(manifest.artifacts.kernel!.bytes / MiB).toFixed(1)} MiB`,
  );
  console.log(
    `power-on → kernel ${r(at.kernel!)} s → /init ${r(at.init!)} s → network ${r(at.network!)} s → state ${r(at.state!)} s → agent ${r(at.agent!)} s → node up ${r(at.node!)} s → registered ${r(at.registered!)} s → runner ${r(at.runner!)} s → first job ${r(at.firstJob)} s`,
  );
  console.log(
    JSON.stringify({
      bench: 'boot',
      accel,
      boot_to_registered_s: r(at.registered!),
      boot_to_first_job_s: r(at.firstJob),
      uki_mib: r(manifest.artifacts.uki!.bytes / MiB),
      initramfs_mib: r(manifest.artifacts.initramfs!.bytes / MiB),
      build_s: r(buildS),
      split,
      load1: os.loadavg()[0],
    }),
  );
} finally {
  await stack.stop();
  await rm(work, { recursive: true, force: true });
}
