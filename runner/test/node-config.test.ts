// Node config files: labels and SAL areas, each checked at start with CONFIG_INVALID naming the file and field.
import { describe, expect, it } from 'vitest';
import { parseNodeConfig } from '../src/node-config.ts';

const F = '/etc/writ/node.json';

describe('node config', () => {
  it('enables the configured SAL areas and keeps the labels', () => {
    const cfg = parseNodeConfig(
      JSON.stringify({
        labels: { role: 'hv', rack: 'r1' },
        sal: { btrfs: { mount: '/srv/pool', imageDir: '/srv/images' }, net: { prefix: 'wx' }, nix: { profilesRoot: '/nix/var/nix/profiles/writ' } },
      }),
      F,
    );
    expect(cfg.labels).toEqual({ role: 'hv', rack: 'r1' });
    for (const cap of ['btrfs.disk.clone', 'net.bridge.ensure', 'net.tap.ensure', 'host.facts', 'time.sleep']) expect(cfg.hostTable.has(cap), cap).toBe(true);
    expect(cfg.hostTable.has('vm.create')).toBe(false);
    // Without a file: the defaults only.
    expect([...parseNodeConfig('{}', F).hostTable.keys()].some((k) => k.startsWith('net.'))).toBe(false);
  });

  it('refuses each mistake with CONFIG_INVALID naming the file and the field', () => {
    const cases: [unknown, RegExp][] = [
      [{ sall: {} }, /unknown key "sall"/],
      [{ sal: { zfs: {} } }, /unknown SAL area "zfs" \(known: btrfs, net, vm, mycelium, nix\)/],
      [{ sal: { btrfs: { mount: 'relative/pool' } } }, /sal\.btrfs: btrfs mount must be an absolute path/],
      [{ sal: { net: { prefix: 'Bad-Prefix' } } }, /sal\.net: net prefix "Bad-Prefix"/],
      [{ sal: { btrfs: [] } }, /sal\.btrfs must be an object/],
      [{ labels: { role: 7 } }, /label role must be a string/],
      [{ labels: { 'Bad Key': 'x' } }, /label key "Bad Key"/],
      ['[1]', /a node config is a JSON object/],
      ['{"labels": {}, "labels": {}}', /not valid JSON/],
    ];
    for (const [doc, want] of cases) {
      let err: unknown;
      try {
        parseNodeConfig(typeof doc === 'string' ? doc : JSON.stringify(doc), F);
      } catch (e) {
        err = e;
      }
      expect(err, String(want)).toMatchObject({ code: 'CONFIG_INVALID' });
      expect((err as Error).message, String(want)).toMatch(want);
      expect((err as Error).message).toContain(F);
    }
  });
});
