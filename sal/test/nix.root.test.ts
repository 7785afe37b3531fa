// Real Nix (Debian nix-bin, single-user as root): builds, signed closure copies, profiles and the
// health-gated switch, all on builtins-only derivations (no nixpkgs, no network).
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodeOf, type WritError } from '@writ/protocol';
import {
  NIX_OPERATIONS,
  nixBuild,
  nixConfig,
  nixCopyIn,
  nixCopyOut,
  nixGenerations,
  nixProfileRollback,
  nixProfileSet,
  nixSwitch,
  type NixConfig,
} from '../src/index.ts';
import { run } from '../src/exec.ts';
import { ensurePackages, isRoot } from './helpers/system.ts';

const suffix = randomBytes(2).toString('hex');
let tmp = '';
let config: NixConfig;
let skipReason: string | null = null;
const built: Record<string, string> = {};

async function codeOf(p: Promise<unknown>): Promise<{ code: string | undefined; err: WritError }> {
  try {
    await p;
  } catch (e) {
    return { code: errorCodeOf(e), err: e as WritError };
  }
  throw new Error('expected a failure');
}

// A test "system": its activation records which generation is active in a state file outside the store,
// its health check passes only when it is the active one and `healthy` says so.
function systemExpr(name: string, state: string, health: 'ok' | 'fail' | 'hang'): string {
  const activate = `#!/bin/sh\\nprintf %s ${name} > ${state}\\n`;
  const check =
    health === 'ok'
      ? `#!/bin/sh\\nread active < ${state}\\n[ \\"$active\\" = ${name} ]\\n`
      : health === 'fail'
        ? `#!/bin/sh\\necho service ${name} is down >&2\\nexit 1\\n`
        : `#!/bin/sh\\nexec /bin/sleep 30\\n`;
  return `derivation {
    name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh";
    activate = "${activate}"; health = "${check}";
    args = [ "-c" "/bin/mkdir -p $out/bin && printf %s \\"$activate\\" > $out/bin/switch-to-configuration && printf %s \\"$health\\" > $out/bin/health && /bin/chmod 555 $out/bin/switch-to-configuration $out/bin/health" ];
  }`;
}

beforeAll(async () => {
  if (!isRoot) {
    skipReason = 'not root: Nix single-user mode needs root';
    console.warn(`skipping nix root tests: ${skipReason}`);
    return;
  }
  skipReason = ensurePackages(['nix-bin']);
  if (skipReason) {
    console.warn(`skipping nix root tests: ${skipReason}`);
    return;
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), `writ-nix-${suffix}-`));
  // A hostile nix.conf: every option the SAL locks down is set the unsafe way here, so a missing
  // override shows up as a test failure rather than passing on Nix's defaults.
  await mkdir(path.join(tmp, 'conf'));
  await writeFile(path.join(tmp, 'conf', 'nix.conf'), 'require-sigs = false\nsubstituters = file:///nonexistent-writ-cache\n');
  process.env.NIX_CONF_DIR = path.join(tmp, 'conf');
  await mkdir(path.join(tmp, 'src'));
  const state = path.join(tmp, 'active');
  await writeFile(
    path.join(tmp, 'src', 'default.nix'),
    `{
      plain = derivation { name = "plain-${suffix}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo hi-${suffix} > $out" ]; };
      other = derivation { name = "other-${suffix}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ho-${suffix} > $out" ]; };
      sysA = ${systemExpr(`sys-a-${suffix}`, state, 'ok')};
      sysB = ${systemExpr(`sys-b-${suffix}`, state, 'ok')};
      broken = ${systemExpr(`sys-broken-${suffix}`, state, 'fail')};
      hanging = ${systemExpr(`sys-hang-${suffix}`, state, 'hang')};
      failing = derivation { name = "failing-${suffix}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "exit 3" ]; };
    }`,
  );
  await writeFile(path.join(tmp, 'src', 'escape.nix'), 'import /etc/passwd');
  await run(['nix-store', '--generate-binary-cache-key', `writ-test-${suffix}`, path.join(tmp, 'cache.sec'), path.join(tmp, 'cache.pub')]);
  const pub = (await readFile(path.join(tmp, 'cache.pub'), 'utf8')).trim();
  config = nixConfig({
    profilesRoot: path.join(tmp, 'profiles'),
    sourcesRoot: path.join(tmp, 'src'),
    exportRoot: path.join(tmp, 'export'),
    substituters: [`file://${tmp}/export/signed`, `file://${tmp}/export/unsigned`],
    trustedPublicKeys: [pub],
    signingKeyFile: path.join(tmp, 'cache.sec'),
    sandbox: false,
  });
}, 600_000);

afterAll(async () => {
  delete process.env.NIX_CONF_DIR;
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('nix on the real nix-bin', () => {
  it('builds a builtins-only derivation and finds the same output again', async (ctx) => {
    if (skipReason) return ctx.skip();
    const t0 = Date.now();
    const first = await nixBuild(config, { file: 'default.nix', attr: 'plain' });
    const ms = Date.now() - t0;
    console.log(`nix-build of a builtins-only derivation: ${ms} ms`);
    expect(first.outPaths).toHaveLength(1);
    const out = first.outPaths[0] ?? '';
    expect(out).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-plain-${suffix}$`));
    expect(await readFile(out, 'utf8')).toBe(`hi-${suffix}\n`);
    expect((await nixBuild(config, { file: 'default.nix', attr: 'plain' })).outPaths).toEqual(first.outPaths);
    for (const attr of ['other', 'sysA', 'sysB', 'broken', 'hanging']) built[attr] = (await nixBuild(config, { file: 'default.nix', attr })).outPaths[0] ?? '';
    built.plain = out;
  });

  it('reports a failing builder as NIX_BUILD_FAILED', async (ctx) => {
    if (skipReason) return ctx.skip();
    const { code, err } = await codeOf(nixBuild(config, { file: 'default.nix', attr: 'failing' }));
    expect(code).toBe('NIX_BUILD_FAILED');
    expect(String(err.details?.stderr)).toContain('exit code 3');
  });

  it('confines builds to the sources root: no path escape, no reading outside it during evaluation', async (ctx) => {
    if (skipReason) return ctx.skip();
    expect((await codeOf(nixBuild(config, { file: '../../etc/passwd' }))).code).toBe('PATH_ESCAPE');
    expect((await codeOf(nixBuild(config, { file: '/etc/passwd' }))).code).toBe('PATH_ESCAPE');
    const { code, err } = await codeOf(nixBuild(config, { file: 'escape.nix' }));
    expect(code).toBe('NIX_BUILD_FAILED');
    expect(String(err.details?.stderr)).toContain('forbidden in restricted mode');
  });

  it('refuses a substituter that is not configured (X7)', async (ctx) => {
    if (skipReason) return ctx.skip();
    const { code } = await codeOf(nixBuild(config, { file: 'default.nix', attr: 'plain', substituters: ['https://cache.example.org'] }));
    expect(code).toBe('NIX_SUBSTITUTER_NOT_ALLOWED');
    expect((await codeOf(nixCopyIn(config, { paths: [built.plain ?? ''], from: `file://${tmp}/elsewhere` }, [built.plain ?? '']))).code).toBe(
      'NIX_SUBSTITUTER_NOT_ALLOWED',
    );
  });

  it('copies a signed closure out and into another store, only for pinned paths; unsigned closures are refused', async (ctx) => {
    if (skipReason) return ctx.skip();
    const plain = built.plain ?? '';
    const t0 = Date.now();
    const out = await nixCopyOut(config, { paths: [plain], to: 'signed' });
    console.log(`nix copy to a file:// cache: ${Date.now() - t0} ms`);
    expect(out.signed).toBe(true);
    const narinfo = await readFile(path.join(out.to, `${path.basename(plain).slice(0, 32)}.narinfo`), 'utf8');
    expect(narinfo).toMatch(new RegExp(`^Sig: writ-test-${suffix}:`, 'm'));

    const other = nixConfig({ ...config, store: `local?root=${tmp}/store2`, signingKeyFile: undefined });
    expect((await codeOf(nixCopyIn(other, { paths: [plain], from: `file://${tmp}/export/signed` }, []))).code).toBe('NIX_PATH_NOT_PINNED');
    const t1 = Date.now();
    expect(await nixCopyIn(other, { paths: [plain], from: `file://${tmp}/export/signed` }, [plain])).toEqual({ copied: [plain], present: [] });
    console.log(`nix copy from a file:// cache into a second store: ${Date.now() - t1} ms`);
    expect(await readFile(path.join(tmp, 'store2', plain), 'utf8')).toBe(`hi-${suffix}\n`);
    expect(await nixCopyIn(other, { paths: [plain], from: `file://${tmp}/export/signed` }, [plain])).toEqual({ copied: [], present: [plain] });

    // The same closure exported without a signature: the hostile nix.conf says require-sigs = false,
    // so only the SAL's own `--option require-sigs true` stops it.
    const unsignedOut = nixConfig({ ...config, signingKeyFile: undefined });
    await nixCopyOut(unsignedOut, { paths: [built.other ?? ''], to: 'unsigned' });
    const third = nixConfig({ ...config, store: `local?root=${tmp}/store3` });
    const { code, err } = await codeOf(nixCopyIn(third, { paths: [built.other ?? ''], from: `file://${tmp}/export/unsigned` }, [built.other ?? '']));
    expect(code).toBe('COMMAND_FAILED');
    expect(String(err.details?.stderr)).toContain('lacks a valid signature');
  });

  it('sets a profile idempotently, lists generations and rolls back', async (ctx) => {
    if (skipReason) return ctx.skip();
    const a = built.plain ?? '';
    const b = built.other ?? '';
    const pins = [a, b];
    expect((await codeOf(nixProfileSet(config, { profile: 'apps', path: a }, [b]))).code).toBe('NIX_PATH_NOT_PINNED');
    expect((await codeOf(nixProfileSet(config, { profile: '../apps', path: a }, pins))).code).toBe('PATH_ESCAPE');
    expect(await nixProfileSet(config, { profile: 'apps', path: a }, pins)).toEqual({ changed: true, generation: 1, path: a });
    expect(await nixProfileSet(config, { profile: 'apps', path: a }, pins)).toEqual({ changed: false, generation: 1, path: a });
    expect(await nixProfileSet(config, { profile: 'apps', path: b }, pins)).toEqual({ changed: true, generation: 2, path: b });
    const gens = await nixGenerations(config, { profile: 'apps' });
    expect(gens.current).toBe(2);
    expect(gens.generations.map((g) => [g.generation, g.path, g.current])).toEqual([
      [1, a, false],
      [2, b, true],
    ]);
    expect(await nixProfileRollback(config, { profile: 'apps' })).toEqual({ from: 2, to: 1, path: a });
    expect((await codeOf(nixProfileRollback(config, { profile: 'apps' }))).code).toBe('RESOURCE_NOT_FOUND');
    expect((await nixGenerations(config, { profile: 'never-set' })).generations).toEqual([]);
  });

  it('switches to a healthy generation, and leaves a second identical switch as no change', async (ctx) => {
    if (skipReason) return ctx.skip();
    const a = built.sysA ?? '';
    const op = NIX_OPERATIONS.find((o) => o.capability === 'nix.switch');
    const ctxFor = { config, job: { id: `job-${suffix}`, attempt: 1, pins: { nix: [a] } } };
    const args = { profile: 'system', path: a, healthCheck: { argv: [`${a}/bin/health`], timeoutMs: 5000 } };
    const t0 = Date.now();
    const res = (await op?.run(args, ctxFor)) as Awaited<ReturnType<typeof nixSwitch>>;
    console.log(`nix.switch (activate + health + profile set): ${Date.now() - t0} ms`);
    expect(res).toMatchObject({ changed: true, path: a, generation: 1, previous: null });
    expect(await readFile(path.join(tmp, 'active'), 'utf8')).toBe(`sys-a-${suffix}`);
    expect(await op?.run(args, ctxFor)).toMatchObject({ changed: false, generation: 1 });
    expect(await codeOf(op?.run(args, { config, job: { id: 'j', attempt: 1 } }) ?? Promise.resolve())).toMatchObject({ code: 'NIX_PATH_NOT_PINNED' });
  });

  it('rolls back a generation whose health check fails: a failure, the old generation re-activated and still the default', async (ctx) => {
    if (skipReason) return ctx.skip();
    const a = built.sysA ?? '';
    const broken = built.broken ?? '';
    const pins = [a, broken];
    const before = await nixGenerations(config, { profile: 'system' });
    const { code, err } = await codeOf(nixSwitch(config, { profile: 'system', path: broken, healthCheck: { argv: [`${broken}/bin/health`] } }, pins));
    expect(code).toBe('NIX_ACTIVATION_FAILED');
    expect(err.details).toMatchObject({ stage: 'health', rolledBackTo: a, rollback: 'reactivated' });
    expect(JSON.stringify(err.details?.failure)).toContain(`service sys-broken-${suffix} is down`);
    // The broken activation ran (it wrote its name), then the old one ran again.
    expect(await readFile(path.join(tmp, 'active'), 'utf8')).toBe(`sys-a-${suffix}`);
    expect(await nixGenerations(config, { profile: 'system' })).toEqual(before);
  });

  it('rolls back a generation whose health check outlives its timeout', async (ctx) => {
    if (skipReason) return ctx.skip();
    const a = built.sysA ?? '';
    const hanging = built.hanging ?? '';
    const t0 = Date.now();
    const { code, err } = await codeOf(
      nixSwitch(config, { profile: 'system', path: hanging, healthCheck: { argv: [`${hanging}/bin/health`], timeoutMs: 500 } }, [hanging]),
    );
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(code).toBe('NIX_ACTIVATION_FAILED');
    expect(err.details).toMatchObject({ stage: 'health', rolledBackTo: a, failure: { code: 'COMMAND_TIMEOUT' } });
    expect(await readFile(path.join(tmp, 'active'), 'utf8')).toBe(`sys-a-${suffix}`);
  });

  it('moves on to the next healthy generation and refuses health programs outside pinned paths', async (ctx) => {
    if (skipReason) return ctx.skip();
    const a = built.sysA ?? '';
    const b = built.sysB ?? '';
    expect((await codeOf(nixSwitch(config, { profile: 'system', path: b, healthCheck: { argv: ['/bin/true'] } }, [b]))).code).toBe('SAL_INVALID_ARGUMENT');
    expect((await codeOf(nixSwitch(config, { profile: 'system', path: b, healthCheck: { argv: [`${b}/../${path.basename(a)}/bin/health`] } }, [b]))).code).toBe(
      'SAL_INVALID_ARGUMENT',
    );
    expect(await nixSwitch(config, { profile: 'system', path: b, healthCheck: { argv: [`${b}/bin/health`] } }, [b])).toMatchObject({
      changed: true,
      generation: 2,
      previous: a,
    });
    expect(await readFile(path.join(tmp, 'active'), 'utf8')).toBe(`sys-b-${suffix}`);
  });
});
