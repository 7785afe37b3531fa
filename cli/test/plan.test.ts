// `writ plan`: the real CLI process (bin/writ.mjs) running scripts in the runner's real sandbox against the
// recording SAL. Compared with the runner's own sandbox and broker where the plan claims to behave the same.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CAPABILITIES, isEffect } from '@writ/protocol';
import { HostBroker, PLANNED_ANSWERS, SandboxPool, parseNodeConfig, planScript, salHostTable } from '@writ/runner';
import { runCli } from '@writ/cli';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/writ.mjs');
const DEPLOY_VM = path.join(ROOT, 'scripts/examples/deploy-vm.js');
const HELLO = path.join(ROOT, 'scripts/examples/hello.js');
const DISK = path.join(ROOT, 'scripts/examples/flows/hv-setup/disk.js');
const DEPLOY_ARGS = {
  name: 'planweb1',
  base: 'images/alpine',
  bridge: 'wplanbr0',
  tap: 'wplantap0',
  mac: '52:54:00:12:34:56',
  kernel: 'vmlinuz',
  initramfs: 'initrd.img',
  cmdline: 'console=ttyS0',
  marker: 'login:',
};
const DEPLOY_ORDER = ['btrfs.disk.clone', 'net.bridge.ensure', 'net.tap.ensure', 'vm.create', 'vm.boot', 'vm.serial.wait', 'vm.info'];
const TIMEOUT = 90_000;

let dir: string;

interface Run {
  code: number;
  out: string;
  err: string;
}

function writ(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: 80_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, out: stdout, err: stderr });
    });
  });
}

/** The same CLI entry in this process (as cli.test.ts does): for the many small cases, without a process start each. */
async function writIn(args: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l) }, { env: process.env, now: () => Math.floor(Date.now() / 1000) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function script(name: string, source: string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, source);
  return file;
}

async function fixture(name: string, value: unknown): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-plan-'));
});

describe('writ plan', () => {
  it(
    'lists deploy-vm.js effects in order with their capabilities, feeding planned answers to later calls, and changes nothing',
    async () => {
      const r = await writ(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS)]);
      expect(r.code, r.err).toBe(0);
      const lines = r.out.split('\n');
      // Each call is a numbered line naming its kind and capability, in the order the script makes them.
      const listed = lines.map((l) => /^\s*(\d+)\. (effect|read)\s+(\S+)\s/.exec(l)).filter((m) => m !== null);
      expect(listed.map((m) => m[3])).toEqual(DEPLOY_ORDER);
      expect(listed.map((m) => Number(m[1]))).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(listed.map((m) => m[2])).toEqual(['effect', 'effect', 'effect', 'effect', 'effect', 'read', 'read']);
      // The arguments are on the call's line; the disk path vm.create gets is built from btrfs.disk.clone's planned answer.
      const create = lines.find((l) => /^\s*4\. effect vm\.create/.test(l))!;
      expect(create).toContain('"disks":[{"path":"disks/planweb1/disk.raw"}]');
      expect(create).toContain('"nics":[{"tap":"wplantap0","mac":"52:54:00:12:34:56"}]');
      expect(lines[lines.indexOf(create) + 1]).toMatch(/→ planned: \{"name":"planweb1","created":true,"state":"created"\}/);
      expect(r.out).toContain(
        '5 effect(s), 2 read(s); capabilities used: btrfs.disk.clone,net.bridge.ensure,net.tap.ensure,vm.boot,vm.create,vm.info,vm.serial.wait',
      );
      expect(r.out).toContain('result (built from planned values)');
      // The script's log lines come between the calls they follow.
      expect(lines.findIndex((l) => l.includes('[info ] vm planweb1: created'))).toBeGreaterThan(lines.indexOf(create));
      // Nothing happened: the bridge and tap the plan "ensured" do not exist.
      expect(existsSync('/sys/class/net/wplanbr0')).toBe(false);
      expect(existsSync('/sys/class/net/wplantap0')).toBe(false);
    },
    TIMEOUT,
  );

  it(
    '--json is one document: script, sha256, effects with seq/call/capability/args/kind/answer, and the result',
    async () => {
      const r = await writ(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS), '--json']);
      expect(r.code, r.err).toBe(0);
      const doc = JSON.parse(r.out);
      expect(doc.ok).toBe(true);
      expect(doc.script).toBe(DEPLOY_VM);
      expect(doc.sha256).toBe(
        createHash('sha256')
          .update(await readFile(DEPLOY_VM))
          .digest('hex'),
      );
      expect(doc.caps).toBeNull();
      expect(doc.effects.map((e: { seq: number }) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(doc.effects.map((e: { capability: string }) => e.capability)).toEqual(DEPLOY_ORDER);
      for (const e of doc.effects) {
        expect(e.call).toBe(`ctx.sal.${e.capability}`);
        expect(e.kind).toBe(isEffect(e.capability) ? 'effect' : 'read');
        expect(e.answerFrom).toBe('planned');
        expect(e.answer).toBeDefined();
      }
      expect(doc.effects[0].args).toEqual({ base: 'images/alpine', name: 'planweb1', file: 'disk.raw' });
      expect(doc.effects[3].args.disks).toEqual([{ path: 'disks/planweb1/disk.raw' }]);
      // vm.info after the planned vm.create and vm.boot describes that VM, running, with the spec it was created with.
      expect(doc.effects[6].answer.state).toBe('running');
      // The spec in the VM SAL's normal form (normalizeVmSpec): maxima and device ids filled in, as a node reports it.
      expect(doc.effects[6].answer.spec).toEqual({
        ...doc.effects[3].args,
        maxVcpus: 1,
        maxMemoryMiB: 256,
        firmware: null,
        disks: [{ id: 'disk0', path: 'disks/planweb1/disk.raw', readonly: false }],
        nics: [{ id: 'net0', tap: 'wplantap0', mac: '52:54:00:12:34:56' }],
      });
      expect(doc.result.created).toEqual({ disk: true, bridge: true, tap: true, vm: true, booted: true });
      expect(doc.result.info).toEqual(doc.effects[6].answer);
      expect(doc.error).toBeUndefined();
    },
    TIMEOUT,
  );

  it(
    'plans hello.js: one read answered from this host, no effects; a script without host calls lists none',
    async () => {
      const hello = JSON.parse((await writ(['plan', HELLO, '--caps', 'host.facts', '--args', '{"name":"plan"}', '--json'])).out);
      expect(hello.ok).toBe(true);
      expect(hello.effects).toHaveLength(1);
      expect(hello.effects[0]).toMatchObject({ seq: 1, capability: 'host.facts', kind: 'read', answerFrom: 'host', args: {} });
      expect(hello.effects[0].answer.hostname).toBe(os.hostname());
      expect(hello.effects.filter((e: { kind: string }) => e.kind === 'effect')).toEqual([]);
      expect(hello.result).toEqual({
        greeting: 'hello, plan',
        hostname: os.hostname(),
        threads: os.cpus().length,
        memoryMiB: Math.round(os.totalmem() / 2 ** 20),
      });

      const pure = await script('pure.js', 'export default async function (args, ctx) { ctx.log.info("thinking"); return { sum: args.a + args.b }; }\n');
      const human = await writ(['plan', pure, '--args', '{"a":2,"b":3}']);
      expect(human.code, human.err).toBe(0);
      expect(human.out).toContain('no host calls: the script has no effects');
      expect(human.out).toContain('0 effect(s), 0 read(s)');
      expect(human.out).not.toMatch(/^\s*\d+\. (effect|read)/m);
      const doc = JSON.parse((await writIn(['plan', pure, '--args', '{"a":2,"b":3}', '--json'])).out);
      expect(doc.effects).toEqual([]);
      expect(doc.result).toEqual({ sum: 5 });
      expect(doc.logs).toEqual([{ level: 'info', message: 'thinking', afterCall: 0 }]);
    },
    TIMEOUT,
  );

  it(
    'plans the btrfs example (flows/hv-setup/disk.js): one btrfs.disk.clone effect',
    async () => {
      const doc = JSON.parse(
        (await writ(['plan', DISK, '--args', '{"base":"images/alpine","name":"vm1","file":"disk.raw"}', '--caps', 'btrfs.disk.clone', '--json'])).out,
      );
      expect(doc.ok).toBe(true);
      expect(doc.effects.map((e: { capability: string; kind: string }) => [e.capability, e.kind])).toEqual([['btrfs.disk.clone', 'effect']]);
      expect(doc.result).toEqual({ disk: 'disks/vm1/disk.raw', created: true });
    },
    TIMEOUT,
  );

  it(
    'an invalid SAL argument fails with the code the runner gives (HOST_CALL_INVALID), and nothing is recorded for it',
    async () => {
      const source =
        'export default async function (args, ctx) { await ctx.sal.time.now(); return await ctx.sal.vm.create({ name: "v1", vcpus: 0, memoryMiB: 256 }); }\n';
      // The runner: its sandbox pool and broker with the node's host table.
      const broker = new HostBroker(salHostTable());
      const pool = new SandboxPool({ size: 1, hostCall: (job, name, args) => broker.call(job, name, args) });
      let runnerCode: string;
      try {
        const outcome = await pool.run({
          jobId: 'runner-side',
          attempt: 1,
          source,
          args: null,
          caps: ['time.now', 'vm.create'],
          limits: { timeoutMs: 20_000, memoryMiB: 64 },
        });
        expect(outcome.ok).toBe(false);
        runnerCode = outcome.ok ? '' : outcome.error.code;
      } finally {
        await pool.close();
      }
      expect(runnerCode).toBe('HOST_CALL_INVALID');

      const file = await script('invalid.js', source);
      const r = await writ(['plan', file, '--caps', 'time.now,vm.create']);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`writ: ${runnerCode}: vm.create arguments /vcpus must be >= 1`);
      const doc = JSON.parse((await writIn(['plan', file, '--caps', 'time.now,vm.create', '--json'])).out);
      expect(doc.ok).toBe(false);
      expect(doc.error.code).toBe(runnerCode);
      expect(doc.effects.map((e: { capability: string }) => e.capability)).toEqual(['time.now']);
    },
    TIMEOUT,
  );

  it(
    "vm.create goes through the VM SAL's own spec check: a spec the schema allows but the SAL refuses fails with its code and message",
    async () => {
      // maxVcpus below vcpus: valid against the schema, refused by the VM SAL's normalizeVmSpec.
      const source =
        'export default async function (a, ctx) { return await ctx.sal.vm.create({ name: "v1", vcpus: 2, maxVcpus: 1, memoryMiB: 256, kernel: "k" }); }\n';
      const state = await mkdtemp(path.join(os.tmpdir(), 'writ-plan-vm-'));
      // The runner, with the VM area configured (the call fails before the SAL touches anything).
      const broker = new HostBroker(salHostTable({ vm: { driver: 'qemu', stateDir: state, imagesRoot: state } }));
      const pool = new SandboxPool({ size: 1, hostCall: (job, name, args) => broker.call(job, name, args) });
      let runnerError: { code: string; message: string };
      try {
        const outcome = await pool.run({
          jobId: 'runner-side',
          attempt: 1,
          source,
          args: null,
          caps: ['vm.create'],
          limits: { timeoutMs: 20_000, memoryMiB: 64 },
        });
        runnerError = outcome.ok ? { code: '', message: '' } : outcome.error;
      } finally {
        await pool.close();
      }
      expect(runnerError.code).toBe('SAL_INVALID_ARGUMENT');

      const plan = await planScript({ source, caps: ['vm.create'] });
      expect(plan.outcome.ok ? null : { code: plan.outcome.error.code, message: plan.outcome.error.message }).toEqual({
        code: runnerError.code,
        message: runnerError.message,
      });
      // The call was made (it passed the sandbox's checks) and is listed with the SAL's refusal.
      expect(plan.calls).toHaveLength(1);
      expect(plan.calls[0]).toMatchObject({ capability: 'vm.create', kind: 'effect', error: { code: 'SAL_INVALID_ARGUMENT' } });
    },
    TIMEOUT,
  );

  it(
    'a call outside --caps fails with CAPABILITY_NOT_GRANTED, after the granted calls before it',
    async () => {
      const r = await writ(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS), '--caps', 'btrfs.disk.clone,net.bridge.ensure,vm.create']);
      expect(r.code).toBe(1);
      expect(r.err).toContain('writ: CAPABILITY_NOT_GRANTED: net.tap.ensure (sign with --caps net.tap.ensure)');
      expect(r.out).toContain('granted: btrfs.disk.clone, net.bridge.ensure, vm.create');
      const doc = JSON.parse(
        (await writIn(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS), '--caps', 'btrfs.disk.clone,net.bridge.ensure,vm.create', '--json'])).out,
      );
      expect(doc.ok).toBe(false);
      expect(doc.caps).toEqual(['btrfs.disk.clone', 'net.bridge.ensure', 'vm.create']);
      expect(doc.error.code).toBe('CAPABILITY_NOT_GRANTED');
      expect(doc.effects.map((e: { capability: string }) => e.capability)).toEqual(['btrfs.disk.clone', 'net.bridge.ensure']);
      expect(doc.result).toBeUndefined();
    },
    TIMEOUT,
  );

  it(
    '--config: a call of a SAL area the node does not configure fails with HOST_CALL_DENIED, a link outside its net prefix with PATH_ESCAPE, as on that node',
    async () => {
      const config = { labels: { rack: 'r1' }, sal: { btrfs: { mount: '/var/lib/writ-plan-test/pool', imageDir: '/var/lib/writ-plan-test/images' } } };
      const file = await fixture('node.json', config);
      // The runner with that node's host table.
      const broker = new HostBroker(parseNodeConfig(JSON.stringify(config), 'node.json').hostTable);
      const pool = new SandboxPool({ size: 1, hostCall: (job, name, args) => broker.call(job, name, args) });
      let runnerError: { code: string; message: string };
      try {
        // Stops before any btrfs work: the disk clone's base does not matter, the bridge call is refused first.
        const source = 'export default async function (a, ctx) { await ctx.sal.net.bridge.ensure({ name: "wplanbr0" }); }\n';
        const outcome = await pool.run({
          jobId: 'runner-side',
          attempt: 1,
          source,
          args: null,
          caps: ['net.bridge.ensure'],
          limits: { timeoutMs: 20_000, memoryMiB: 64 },
        });
        runnerError = outcome.ok ? { code: '', message: '' } : outcome.error;
      } finally {
        await pool.close();
      }
      expect(runnerError.code).toBe('HOST_CALL_DENIED');

      const r = await writ(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS), '--config', file, '--json']);
      expect(r.code).toBe(1);
      const doc = JSON.parse(r.out);
      // btrfs is configured: the clone is planned; net is not: the bridge is refused with the runner's code and message.
      expect(doc.effects.map((e: { capability: string }) => e.capability)).toEqual(['btrfs.disk.clone']);
      expect(doc.error).toMatchObject({ code: runnerError.code, message: runnerError.message });
      expect(doc.error.message).toBe('capability "net.bridge.ensure" is not available on this node');
      expect(doc.config).toBe(file);

      // With the net area and its prefix "wr", the bridge name is checked by the net SAL's own check, as on the node.
      const withNet = { sal: { ...config.sal, net: { prefix: 'wr' } } };
      const netBroker = new HostBroker(parseNodeConfig(JSON.stringify(withNet), 'node-net.json').hostTable);
      const netPool = new SandboxPool({ size: 1, hostCall: (job, name, args) => netBroker.call(job, name, args) });
      let netError: { code: string; message: string };
      try {
        const source = 'export default async function (a, ctx) { await ctx.sal.net.bridge.ensure({ name: "wplanbr0" }); }\n';
        const outcome = await netPool.run({
          jobId: 'runner-side',
          attempt: 1,
          source,
          args: null,
          caps: ['net.bridge.ensure'],
          limits: { timeoutMs: 20_000, memoryMiB: 64 },
        });
        netError = outcome.ok ? { code: '', message: '' } : outcome.error;
      } finally {
        await netPool.close();
      }
      expect(netError.code).toBe('PATH_ESCAPE');
      const netPlan = JSON.parse(
        (await writIn(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS), '--config', await fixture('node-net.json', withNet), '--json'])).out,
      );
      expect(netPlan.error).toMatchObject({ code: netError.code, message: netError.message });
      expect(netPlan.effects.map((e: { capability: string }) => e.capability)).toEqual(['btrfs.disk.clone', 'net.bridge.ensure']);
      expect(netPlan.effects[1].error).toMatchObject({ code: 'PATH_ESCAPE' });
      expect(existsSync('/sys/class/net/wplanbr0')).toBe(false);

      const bad = await fixture('bad-node.json', { sal: { foo: {} } });
      const refused = await writIn(['plan', HELLO, '--config', bad]);
      expect([refused.code, refused.err]).toEqual([1, expect.stringContaining('CONFIG_INVALID')]);
    },
    TIMEOUT,
  );

  it(
    'plans a signed job envelope with the args, caps and job id it carries (what a co-signer is asked to sign)',
    async () => {
      const key = path.join(dir, 'alice.key');
      expect((await writIn(['keys', 'generate', '--out', key])).code).toBe(0);
      const env = path.join(dir, 'deploy.env.json');
      const granted = DEPLOY_ORDER.filter((c) => c !== 'vm.info');
      const signed = await writIn([
        'sign',
        DEPLOY_VM,
        '--key',
        key,
        '--target',
        'node=n1',
        '--id',
        'deploy-web1',
        '--args',
        JSON.stringify(DEPLOY_ARGS),
        '--caps',
        granted.join(','),
        '--out',
        env,
      ]);
      expect(signed.code, signed.err).toBe(0);
      const r = await writ(['plan', env, '--json']);
      expect(r.code).toBe(1);
      const doc = JSON.parse(r.out);
      expect(doc.envelope).toMatchObject({ jobId: 'deploy-web1', signaturesChecked: false });
      expect(doc.envelope.keyids).toHaveLength(1);
      expect(doc.target).toEqual({ node: 'n1' });
      expect(doc.caps).toEqual(granted);
      expect(doc.args).toEqual(DEPLOY_ARGS);
      expect(doc.sha256).toBe(
        createHash('sha256')
          .update(await readFile(DEPLOY_VM))
          .digest('hex'),
      );
      // The envelope was signed without vm.info: the plan shows it would fail on the node, after six calls.
      expect(doc.effects.map((e: { capability: string }) => e.capability)).toEqual(granted);
      expect(doc.error.code).toBe('CAPABILITY_NOT_GRANTED');
      expect(doc.error.message).toBe('vm.info (sign with --caps vm.info)');
      // What the envelope carries cannot be overridden.
      const override = await writIn(['plan', env, '--caps', 'vm.info']);
      expect([override.code, override.err]).toEqual([2, expect.stringContaining('is a signed envelope: it carries its own --caps')]);
    },
    TIMEOUT,
  );

  it(
    'a fixture answer feeds later calls; answers are used in order; a fixture error fails the call as the script sees it',
    async () => {
      const fx = await fixture('deploy.fixture.json', {
        'btrfs.disk.clone': { answer: { path: 'vms/planweb1', diskPath: '/pool/vms/planweb1/disk.raw', created: false, baseUuid: 'b', uuid: 'c' } },
        'vm.info': { error: { code: 'RESOURCE_NOT_FOUND', message: 'no VM named planweb1' } },
      });
      const doc = JSON.parse((await writ(['plan', DEPLOY_VM, '--args', JSON.stringify(DEPLOY_ARGS), '--fixture', fx, '--json'])).out);
      expect(doc.effects[0]).toMatchObject({ capability: 'btrfs.disk.clone', answerFrom: 'fixture', answer: { path: 'vms/planweb1', created: false } });
      // vm.create's disk comes from the fixture's clone path, not the planned one.
      expect(doc.effects[3].args.disks).toEqual([{ path: 'vms/planweb1/disk.raw' }]);
      expect(doc.logs[0].message).toBe('disk vms/planweb1: already there');
      expect(doc.effects[6]).toMatchObject({
        capability: 'vm.info',
        answerFrom: 'fixture',
        error: { code: 'RESOURCE_NOT_FOUND', message: 'no VM named planweb1' },
      });
      expect(doc.effects[6].answer).toBeUndefined();
      expect(doc.ok).toBe(false);
      expect(doc.error).toMatchObject({ code: 'RESOURCE_NOT_FOUND', message: 'no VM named planweb1' });

      const seq = await script(
        'facts-twice.js',
        'export default async function (a, ctx) { const x = await ctx.sal.host.facts(); const y = await ctx.sal.host.facts(); const z = await ctx.sal.host.facts(); return [x.hostname, y.hostname, z.hostname]; }\n',
      );
      const twice = await fixture('facts.json', { 'host.facts': { answers: [{ hostname: 'node-a' }, { hostname: 'node-b' }] } });
      const d2 = JSON.parse((await writIn(['plan', seq, '--fixture', twice, '--json'])).out);
      expect(d2.result).toEqual(['node-a', 'node-b', os.hostname()]);
      expect(d2.effects.map((e: { answerFrom: string }) => e.answerFrom)).toEqual(['fixture', 'fixture', 'host']);
    },
    TIMEOUT,
  );

  it(
    'refuses bad input with stable codes: unreadable script, syntax error with line and column, invalid fixture, unknown capability',
    async () => {
      const missing = await writ(['plan', path.join(dir, 'nope.js')]);
      expect([missing.code, missing.err]).toEqual([2, expect.stringContaining('writ: USAGE: cannot read script')]);

      const bad = await script('bad.js', 'export default async function (a, ctx) {\n  const x = ;\n}\n');
      const syntax = await writIn(['plan', bad, '--json']);
      expect(syntax.code).toBe(1);
      expect(JSON.parse(syntax.out).error).toMatchObject({ code: 'SCRIPT_INVALID', details: { line: 2, column: 13 } });

      const cases: [unknown, string][] = [
        ['{"vm.info": ', 'is not valid JSON'],
        [[], 'must be a JSON object'],
        [{ 'vm.craete': { answer: 1 } }, '"vm.craete" is not a capability; did you mean vm.create'],
        [{ 'vm.info': { anwser: 1 } }, 'must have exactly one of "answer", "answers" or "error"'],
        [{ 'vm.info': { answers: [] } }, '"answers" must be a non-empty array'],
        [{ 'vm.info': { error: { code: 'NOPE', message: 'x' } } }, '"error.code" must be a Writ error code'],
        ['{"vm.info": {"answer": {"big": 1e400}}}', 'is not valid JSON'],
        ['{"vm.info": {"answer": 1}, "vm.info": {"answer": 2}}', 'is not valid JSON'],
      ];
      let i = 0;
      for (const [value, message] of cases) {
        const fx = await fixture(`bad-${i++}.json`, value);
        const r = await writIn(['plan', HELLO, '--fixture', fx, '--json']);
        expect(r.code, message).toBe(1);
        const err = JSON.parse(r.out).error;
        expect(err.code, message).toBe('PLAN_FIXTURE_INVALID');
        expect(err.message).toContain(message);
      }

      const caps = await writIn(['plan', HELLO, '--caps', 'host.fatcs']);
      expect([caps.code, caps.err]).toEqual([
        1,
        expect.stringContaining('CAPABILITY_UNKNOWN: --caps host.fatcs is not a capability; did you mean host.facts?'),
      ]);
    },
    TIMEOUT,
  );

  it(
    'stops a script that loops on an answer the plan never changes, at the call cap, with the calls so far',
    async () => {
      const source = `export default async function (a, ctx) {
      for (;;) { const vm = await ctx.sal.vm.info({ name: 'web1' }); if (vm.state === 'running') return 'up'; await ctx.sal.time.sleep({ ms: 1000 }); }
    }`;
      const fixture = { 'vm.info': { answer: { name: 'web1', state: 'shutdown' } } };
      const plan = await planScript({ source, caps: ['vm.info', 'time.sleep'], fixture, maxCalls: 40 });
      expect(plan.outcome.ok).toBe(false);
      expect(plan.outcome.ok ? '' : plan.outcome.error.code).toBe('JOB_CANCELLED');
      expect(plan.outcome.ok ? '' : plan.outcome.error.message).toContain('stopped the script after 40 host calls');
      expect(plan.calls).toHaveLength(40);
      expect(plan.calls.map((c) => c.capability).slice(0, 4)).toEqual(['vm.info', 'time.sleep', 'vm.info', 'time.sleep']);
      // time.sleep does not wait in a plan: forty calls, twenty "seconds" of sleeping, in far less time.
      expect(plan.durationMs).toBeLessThan(15_000);
    },
    TIMEOUT,
  );

  it('has a planned answer for every capability this machine does not answer itself', () => {
    const fromHost = ['host.facts', 'time.now', 'random.bytes'];
    const missing = [...CAPABILITIES.keys()].filter((c) => !fromHost.includes(c) && !(c in PLANNED_ANSWERS));
    expect(missing).toEqual([]);
    expect(Object.keys(PLANNED_ANSWERS).filter((c) => !CAPABILITIES.has(c))).toEqual([]);
  });
});
