// coordConfig: flags and env in, defaulted and frozen out; every value it can refuse is refused with
// CONFIG_INVALID (USAGE for what is missing, as `writ coord` always said) naming the flag or env var.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { coordConfig, type CoordGiven } from '../src/config.ts';

const ADMIN = { keyid: 'ed25519:' + 'A'.repeat(43), publicKey: 'B'.repeat(43) };
const HOME = '/home/op/.writ';
const GIVEN: CoordGiven = { home: HOME, supervisor: 'http://127.0.0.1:7341', supervisorKey: 'sup.pub', adminKeys: [ADMIN] };
const ENV = { WRIT_TOKEN: 'api-token', WRIT_SUPERVISOR_TOKEN: 'sup-token' };

function refusal(given: Partial<CoordGiven>, env: Record<string, string | undefined> = {}): { code: string; message: string } {
  try {
    coordConfig({ ...GIVEN, ...given }, { ...ENV, ...env });
  } catch (e) {
    return { code: (e as { code: string }).code, message: (e as Error).message };
  }
  throw new Error('expected the config to be refused');
}

describe('coordConfig', () => {
  it('applies the defaults for everything not given, with the ledger in PGlite under the state dir', () => {
    expect(coordConfig(GIVEN, ENV)).toEqual({
      apiToken: 'api-token',
      supervisorToken: 'sup-token',
      supervisorUrl: 'http://127.0.0.1:7341',
      supervisorKeyFile: 'sup.pub',
      listen: { host: '127.0.0.1', port: 7340 },
      clusterId: 'writ-dev',
      stateDir: `${HOME}/coord`,
      ledger: { dataDir: `${HOME}/coord/ledger` },
      admins: { threshold: 1, keys: [ADMIN] },
      logLevel: 'info',
      shutdownGraceMs: 10_000,
      bootImage: null,
    });
  });

  it('takes --boot-image as an absolute folder holding a manifest.json, and refuses one without', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'writ-config-'));
    try {
      await writeFile(path.join(dir, 'manifest.json'), '{}');
      const rel = path.relative(process.cwd(), dir);
      expect(coordConfig({ ...GIVEN, bootImage: rel }, ENV).bootImage).toBe(dir);
      const empty = path.join(dir, 'empty');
      await mkdir(empty);
      expect(refusal({ bootImage: empty })).toEqual({
        code: 'CONFIG_INVALID',
        message: `--boot-image ${empty} has no manifest.json: give the folder writ image ipxe --out DIR wrote`,
      });
      expect(refusal({ bootImage: ' ' })).toEqual({ code: 'CONFIG_INVALID', message: '--boot-image must name a folder' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps the ledger in PostgreSQL when DATABASE_URL is set, and takes the cluster from WRIT_CLUSTER', () => {
    expect(coordConfig({ ...GIVEN, state: '/srv/coord' }, { ...ENV, DATABASE_URL: 'postgres://db/writ', WRIT_CLUSTER: 'prod' })).toMatchObject({
      ledger: { databaseUrl: 'postgres://db/writ' },
      clusterId: 'prod',
      stateDir: '/srv/coord',
    });
  });

  it('is frozen all the way down', () => {
    const c = coordConfig(GIVEN, ENV);
    expect([c, c.listen, c.ledger, c.admins, c.admins.keys, c.admins.keys[0]].map(Object.isFrozen)).toEqual([true, true, true, true, true, true]);
  });

  it('refuses a missing token, supervisor, supervisor key or admin key as a usage error, as the CLI always has', () => {
    expect(refusal({}, { WRIT_TOKEN: undefined })).toEqual({ code: 'USAGE', message: 'WRIT_TOKEN is required' });
    expect(refusal({}, { WRIT_SUPERVISOR_TOKEN: '' })).toEqual({ code: 'USAGE', message: 'WRIT_SUPERVISOR_TOKEN is required' });
    // Without --supervisor every supervisor joins by signed heartbeats; a key without a URL (or the reverse) is a slip.
    expect(coordConfig({ ...GIVEN, supervisor: undefined, supervisorKey: undefined }, ENV)).toMatchObject({ supervisorUrl: null, supervisorKeyFile: null });
    expect(refusal({ supervisor: undefined })).toEqual({ code: 'USAGE', message: '--supervisor-key goes with --supervisor URL' });
    expect(refusal({ supervisorKey: undefined })).toEqual({
      code: 'USAGE',
      message: '--supervisor-key FILE is required with --supervisor: the public key its reports are signed with',
    });
    expect(refusal({ adminKeys: undefined }).code).toBe('USAGE');
  });

  it.each([
    ['--listen without a port', { listen: ':' }, {}, /^--listen :: expected HOST:PORT$/],
    ['--listen with a port past 65535', { listen: '0.0.0.0:99999' }, {}, /^--listen .*0 to 65535/],
    ['--supervisor without a scheme', { supervisor: '127.0.0.1:7341' }, {}, /^--supervisor 127.0.0.1:7341: not a URL/],
    ['--supervisor that is not http(s)://', { supervisor: 'redis://s' }, {}, /^--supervisor .*http: or https: URL/],
    ['--admin-threshold above the number of keys', { adminThreshold: '3', adminKeys: [ADMIN, ADMIN] }, {}, /^--admin-threshold must be 1 to 2$/],
    ['--admin-threshold of 0', { adminThreshold: '0' }, {}, /^--admin-threshold must be 1 to 1$/],
    ['an empty --cluster', { cluster: '' }, {}, /^--cluster /],
    ['an unknown WRIT_LOG_LEVEL', {}, { WRIT_LOG_LEVEL: 'verbose' }, /^WRIT_LOG_LEVEL verbose/],
    ['a shutdown grace that is not whole', { shutdownGraceMs: 1.5 }, {}, /^shutdownGraceMs 1.5/],
  ] as const)('refuses %s with CONFIG_INVALID naming it', (_what, given, env, message) => {
    const r = refusal(given, env);
    expect(r.code).toBe('CONFIG_INVALID');
    expect(r.message).toMatch(message);
  });
});
