// The rough edges a newcomer meets in the CLI (issue 13): --version, "did you mean", scripts that do not parse,
// envelopes that exist already, no cluster running, and service logs (pretty on a terminal, JSON otherwise).
import { readdir, readFile, mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli, serviceLogger } from '@writ/cli';

const root = path.resolve(import.meta.dirname, '..');
const HELLO = path.join(root, 'scripts/examples/hello.js');
let dir: string;
let key: string;

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { WRIT_HOME: path.join(dir, 'home'), ...env }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-cli-edges-'));
  key = path.join(dir, 'alice.key');
  expect((await cli(['keys', 'generate', '--out', key])).code).toBe(0);
});

describe('--version and "did you mean"', () => {
  it('writ --version prints the package version and exits 0', async () => {
    const { version } = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await cli([flag]);
      expect([flag, r.code, r.out]).toEqual([flag, 0, `writ ${version} (node ${process.version})`]);
    }
    expect(JSON.parse((await cli(['--version', '--json'])).out)).toEqual({ writ: version, node: process.version });
  });

  it('suggests the nearest command, flag, capability and job status', async () => {
    const cmd = await cli(['sbumit']);
    expect([cmd.code, cmd.err]).toEqual([2, expect.stringContaining('unknown command "sbumit"; did you mean submit?')]);
    const flag = await cli(['sign', HELLO, '--key', key, '--tagret', 'node=a']);
    expect([flag.code, flag.err]).toEqual([2, expect.stringContaining('unknown option --tagret; did you mean --target?')]);
    const cap = await cli(['sign', HELLO, '--key', key, '--target', 'node=a', '--caps', 'host.fact']);
    expect([cap.code, cap.err]).toEqual([1, expect.stringContaining('CAPABILITY_UNKNOWN: --caps host.fact is not a capability; did you mean host.facts?')]);
    const status = await cli(['jobs', 'list', '--status', 'faild']);
    expect([status.code, status.err]).toEqual([
      2,
      expect.stringMatching(/--status faild is not a job status; did you mean failed\? \(one of: admitted, queued/),
    ]);
    // Nothing near: no suggestion.
    const far = await cli(['zzzzzzzz']);
    expect(far.err).not.toContain('did you mean');
  });
});

describe('writ runner --help', () => {
  it('documents --heartbeat-ms, which the operations walkthrough passes to match writ dev', async () => {
    const help = await cli(['runner', '--help']);
    expect(help.out).toMatch(/--heartbeat-ms N\s+send a signed heartbeat every N ms \(default 30000\)/);
    const ops = await readFile(path.join(root, 'docs/operations.md'), 'utf8');
    expect(ops).toMatch(/writ runner --node node-2 [^`]*--heartbeat-ms 5000/);
  });
});

describe('writ sign compiles the script first', () => {
  it('a syntax error is SCRIPT_INVALID with its line and column, and nothing is signed', async () => {
    const bad = path.join(dir, 'bad.js');
    await writeFile(bad, 'export default async function (args, ctx) {\n  const x = { a: 1 b: 2 };\n  return x;\n}\n');
    const out = path.join(dir, 'bad.env.json');
    const r = await cli(['sign', bad, '--key', key, '--target', 'node=a', '--out', out]);
    expect([r.code, r.err]).toEqual([1, `writ: SCRIPT_INVALID: ${bad}: the script does not parse at line 2, column 20: expecting '}'`]);
    await expect(readFile(out)).rejects.toMatchObject({ code: 'ENOENT' });
    const json = await cli(['sign', bad, '--key', key, '--target', 'node=a', '--json']);
    expect(JSON.parse(json.out)).toMatchObject({ ok: false, error: { code: 'SCRIPT_INVALID', details: { line: 2, column: 20 } } });
    const imports = path.join(dir, 'imports.js');
    await writeFile(imports, "import fs from 'fs';\nexport default async () => fs;\n");
    const im = await cli(['sign', imports, '--key', key, '--target', 'node=a']);
    expect([im.code, im.err]).toEqual([1, expect.stringContaining('SCRIPT_INVALID')]);
    expect(im.err).toContain('cannot import modules');
    expect((await cli(['sign', HELLO, '--key', key, '--target', 'node=a', '--caps', 'host.facts'])).code).toBe(0);
  });
});

describe('writ sign --out', () => {
  it('refuses an existing envelope file with ENVELOPE_FILE_EXISTS and leaves it as it was; --force overwrites', async () => {
    const out = path.join(dir, 'hello.env.json');
    expect((await cli(['sign', HELLO, '--key', key, '--target', 'node=dev-1', '--caps', 'host.facts', '--out', out])).code).toBe(0);
    const first = await readFile(out, 'utf8');
    const again = await cli(['sign', HELLO, '--key', key, '--target', 'node=dev-1', '--caps', 'host.facts', '--out', out]);
    expect([again.code, again.err]).toEqual([1, expect.stringMatching(/^writ: ENVELOPE_FILE_EXISTS: .*hello\.env\.json exists already.*--force/)]);
    expect(await readFile(out, 'utf8')).toBe(first);
    expect((await cli(['sign', HELLO, '--key', key, '--target', 'node=dev-1', '--caps', 'host.facts', '--out', out, '--force'])).code).toBe(0);
    expect(await readFile(out, 'utf8')).not.toBe(first);
  });
});

describe('no cluster running', () => {
  it('submit and jobs list say to start `writ dev` (NO_COORD, exit 1, not a usage error), before any key-file hint', async () => {
    const empty = { WRIT_HOME: path.join(dir, 'empty-home') };
    const submit = await cli(['submit', HELLO, '--target', 'node=dev-1', '--caps', 'host.facts'], empty);
    expect([submit.code, submit.err]).toEqual([1, expect.stringMatching(/^writ: NO_COORD: .*start one with `writ dev --keep`/)]);
    expect(submit.err).not.toContain('KEY_FILE');
    const list = await cli(['jobs', 'list'], empty);
    expect([list.code, list.err]).toEqual([1, expect.stringMatching(/^writ: NO_COORD: .*writ dev --keep/)]);
    const json = await cli(['jobs', 'list', '--json'], empty);
    expect([json.code, JSON.parse(json.out).error.code]).toEqual([1, 'NO_COORD']);
  });

  it('a coord recorded by a `writ dev --keep` that has stopped: NOT_READY with the hint to start it again', async () => {
    const home = path.join(dir, 'stale-home');
    await mkdir(home, { recursive: true });
    // Port 9 (discard) on loopback: nothing listens there.
    await writeFile(path.join(home, 'dev.json'), JSON.stringify({ url: 'http://127.0.0.1:9', token: 't' }));
    const r = await cli(['jobs', 'list'], { WRIT_HOME: home });
    expect([r.code, r.err]).toEqual([
      1,
      expect.stringMatching(/^writ: NOT_READY: cannot reach the coord at http:\/\/127\.0\.0\.1:9 \(the address `writ dev --keep` recorded: start it again/),
    ]);
  });

  it('with a coord but no default key, the key hint names --key and `writ dev`', async () => {
    const r = await cli(['submit', HELLO, '--target', 'node=dev-1', '--coord', 'http://127.0.0.1:9'], {
      WRIT_HOME: path.join(dir, 'nokey-home'),
      WRIT_TOKEN: 't',
    });
    expect([r.code, r.err]).toEqual([
      1,
      expect.stringMatching(/KEY_FILE_NOT_FOUND: no --key given, and the default .*admin\.key does not exist: pass --key FILE, or start `writ dev --keep`/),
    ]);
  });
});

describe('service logs', () => {
  function capture() {
    const stream = new PassThrough();
    const chunks: string[] = [];
    stream.on('data', (d: Buffer) => chunks.push(d.toString()));
    return { stream, text: () => chunks.join('') };
  }

  it('are readable lines on a terminal and JSON lines otherwise; WRIT_LOG_FORMAT overrides', async () => {
    const tty = capture();
    serviceLogger('info', {}, { tty: true, destination: tty.stream }).info({ jobId: 'j1' }, 'dispatch deferred');
    await new Promise((r) => setImmediate(r));
    expect(tty.text()).toMatch(/INFO.*: dispatch deferred\n\s+jobId: "j1"/);
    expect(tty.text()).not.toMatch(/^\{/);
    const pipe = capture();
    serviceLogger('info', {}, { tty: false, destination: pipe.stream }).info({ jobId: 'j1' }, 'dispatch deferred');
    await new Promise((r) => setImmediate(r));
    expect(JSON.parse(pipe.text())).toMatchObject({ level: 30, msg: 'dispatch deferred', jobId: 'j1' });
    const forced = capture();
    serviceLogger('info', { WRIT_LOG_FORMAT: 'json' }, { tty: true, destination: forced.stream }).info('x');
    await new Promise((r) => setImmediate(r));
    expect(JSON.parse(forced.text())).toMatchObject({ msg: 'x' });
    expect(() => serviceLogger('info', { WRIT_LOG_FORMAT: 'xml' })).toThrow(/WRIT_LOG_FORMAT must be json or pretty/);
  });

  it('a line never carries the msg key twice: a msg field becomes detail', async () => {
    const pipe = capture();
    serviceLogger('info', {}, { tty: false, destination: pipe.stream }).warn({ jobId: 'j1', msg: 'no active node' }, 'dispatch deferred');
    await new Promise((r) => setImmediate(r));
    const line = pipe.text().trim();
    expect(line.match(/"msg":/g)).toHaveLength(1);
    expect(JSON.parse(line)).toMatchObject({ msg: 'dispatch deferred', detail: 'no active node', jobId: 'j1' });
  });

  it('no service passes a msg field to its logger (it would repeat the message key)', async () => {
    const offenders: string[] = [];
    for (const pkg of ['coord', 'supervisor', 'runner', 'cli', 'sal']) {
      const files = (await readdir(path.join(root, pkg, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts'));
      for (const f of files) {
        const text = await readFile(path.join(root, pkg, 'src', f), 'utf8');
        text.split('\n').forEach((line, i) => {
          if (/\blog(ger)?\??\.(trace|debug|info|warn|error|fatal)\(\{[^}]*\bmsg:/.test(line)) offenders.push(`${pkg}/src/${f}:${i + 1}`);
        });
      }
    }
    expect(offenders).toEqual([]);
  });
});
