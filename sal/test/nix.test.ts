// Nix SAL rules that need no Nix: configuration, the locked-down flags, pinning and argument schemas.
import { describe, expect, it } from 'vitest';
import { CAPABILITIES, errorCodeOf } from '@writ/protocol';
import { allowedSubstituters, assertPinned, lockedDownOptions, NIX_OPERATIONS, nixConfig } from '../src/index.ts';

const KEY = 'cache-1:9O1ggiJRku6nFtQ31thicgHplWfJMYUaBI8PaI2WAsQ=';
const P = '/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return errorCodeOf(e);
  }
  return undefined;
}

describe('nix config and X7 flags', () => {
  it('refuses substituters without trusted keys, unknown fields and relative roots', () => {
    expect(codeOf(() => nixConfig({ profilesRoot: '/p', substituters: ['https://cache.example.org'] }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => nixConfig({ profilesRoot: 'p' }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => nixConfig({ profilesRoot: '/p', substituter: [] }))).toBe('UNKNOWN_FIELD');
    expect(Object.isFrozen(nixConfig({ profilesRoot: '/p' }))).toBe(true);
  });

  it('always passes only the configured substituters, required signatures and the trusted keys', () => {
    const config = nixConfig({ profilesRoot: '/p', substituters: ['https://a.example', 'file:///c'], trustedPublicKeys: [KEY] });
    const opts = lockedDownOptions(config);
    const pairs = new Map<string, string>();
    for (let i = 0; i < opts.length; i += 3) {
      expect(opts[i]).toBe('--option');
      pairs.set(opts[i + 1] ?? '', opts[i + 2] ?? '');
    }
    expect(pairs.get('substituters')).toBe('https://a.example file:///c');
    expect(pairs.get('extra-substituters')).toBe('');
    expect(pairs.get('require-sigs')).toBe('true');
    expect(pairs.get('trusted-public-keys')).toBe(KEY);
    expect(pairs.get('sandbox')).toBe('true');
    // With no substituters configured, Nix must not fall back to its default cache.
    expect(lockedDownOptions(nixConfig({ profilesRoot: '/p' }))).toEqual(expect.arrayContaining(['substituters', '']));
  });

  it('refuses an unconfigured substituter and allows a configured subset', () => {
    const config = nixConfig({ profilesRoot: '/p', substituters: ['https://a.example'], trustedPublicKeys: [KEY] });
    expect(codeOf(() => allowedSubstituters(config, ['https://b.example']))).toBe('NIX_SUBSTITUTER_NOT_ALLOWED');
    expect(allowedSubstituters(config, [])).toEqual([]);
    expect(allowedSubstituters(config, undefined)).toEqual(['https://a.example']);
  });

  it('installs only exactly pinned store paths', () => {
    expect(codeOf(() => assertPinned([P], []))).toBe('NIX_PATH_NOT_PINNED');
    expect(codeOf(() => assertPinned([`${P}/bin`], [P]))).toBe('NIX_PATH_NOT_PINNED');
    expect(codeOf(() => assertPinned([P], [P]))).toBeUndefined();
  });
});

describe('nix operations table', () => {
  it('has one operation per registered nix capability', () => {
    const registered = [...CAPABILITIES.keys()].filter((n) => n.startsWith('nix.')).sort();
    expect(NIX_OPERATIONS.map((o) => o.capability).sort()).toEqual(registered);
  });

  it('validates arguments against the capability schema before touching anything', async () => {
    const config = nixConfig({ profilesRoot: '/nonexistent' });
    const op = NIX_OPERATIONS.find((o) => o.capability === 'nix.profile-set');
    await expect(op?.run({ profile: 'a', path: '/etc/passwd' }, { config })).rejects.toMatchObject({ code: 'SAL_INVALID_ARGUMENT' });
    await expect(op?.run({ profile: 'a', path: P, extra: 1 }, { config })).rejects.toMatchObject({ code: 'UNKNOWN_FIELD' });
    await expect(op?.run({ profile: 'a', path: P }, { config })).rejects.toMatchObject({ code: 'NIX_PATH_NOT_PINNED' });
  });
});
