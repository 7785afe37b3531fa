// net SAL without root: name rules (X6 plus the prefix), config checks, and the operation table kept in
// step with the capability registry.
import { describe, expect, it } from 'vitest';
import { CAPABILITIES, errorCodeOf } from '@writ/protocol';
import { checkLinkName, checkNetnsName, NET_OPERATIONS, netConfig } from '../src/index.ts';

const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return errorCodeOf(e);
  }
  return 'no error';
};

describe('net operation table', () => {
  it('has exactly one operation per net capability, named alike', () => {
    const caps = [...CAPABILITIES.keys()].filter((n) => n.startsWith('net.')).sort();
    expect(NET_OPERATIONS.map((o) => o.capability).sort()).toEqual(caps);
    expect(caps).toHaveLength(17);
  });

  it('marks every delete, address/route/link change and exec as dangerous; ensures and lists are not', () => {
    for (const c of [...CAPABILITIES.values()].filter((x) => x.name.startsWith('net.'))) {
      const reconfigures = /\.(delete|exec|set)$/.test(c.name) || /^net\.(addr|route)\.(add|delete)$/.test(c.name);
      expect(c.dangerous, c.name).toBe(reconfigures);
    }
  });
});

describe('net names', () => {
  const config = netConfig({ prefix: 'wr' });

  it('confines host links and all namespaces to the prefix', () => {
    expect(checkLinkName(config, 'wrbr0', undefined)).toBe('wrbr0');
    expect(codeOf(() => checkLinkName(config, 'eth0', undefined))).toBe('PATH_ESCAPE');
    expect(checkLinkName(config, 'eth0', 'wrns')).toBe('eth0');
    expect(checkNetnsName(config, 'wrns')).toBe('wrns');
    expect(codeOf(() => checkNetnsName(config, 'other'))).toBe('PATH_ESCAPE');
  });

  it('refuses traversal and NUL bytes with PATH_ESCAPE, and over-long names', () => {
    for (const bad of ['../wr', 'wr/x', 'wr\0x', '..', '.']) {
      expect(
        codeOf(() => checkLinkName(config, bad, undefined)),
        bad,
      ).toBe('PATH_ESCAPE');
      expect(
        codeOf(() => checkNetnsName(config, bad)),
        bad,
      ).toBe('PATH_ESCAPE');
    }
    expect(codeOf(() => checkLinkName(config, 'wr0123456789abcd', 'wrns'))).toBe('SAL_INVALID_ARGUMENT');
    expect(checkLinkName(config, 'wr0123456789abc', 'wrns')).toHaveLength(15);
  });

  it('checks the config: a real prefix and bare program names', () => {
    expect(codeOf(() => netConfig({ prefix: '' }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => netConfig({ prefix: 'a-much-too-long-prefix' }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => netConfig({ execAllow: ['/bin/sh'] }))).toBe('CONFIG_INVALID');
    expect(netConfig()).toEqual({ prefix: 'wr', execAllow: ['ping'] });
  });
});

describe('net docs', () => {
  it('docs/sal-btrfs-net.md lists every net and btrfs capability', async () => {
    const { readFile } = await import('node:fs/promises');
    const doc = await readFile(new URL('../../docs/sal-btrfs-net.md', import.meta.url), 'utf8');
    for (const name of CAPABILITIES.keys()) {
      if (name.startsWith('net.') || name.startsWith('btrfs.')) expect(doc, name).toContain(`\`${name}\``);
    }
    for (const c of CAPABILITIES.values()) {
      if (c.dangerous && (c.name.startsWith('net.') || c.name.startsWith('btrfs.'))) expect(doc, c.name).toContain(`\`${c.name}\` **(dangerous)**`);
    }
  });
});
