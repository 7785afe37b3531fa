// btrfs SAL without root: parsers on output captured from btrfs-progs 6.2 / util-linux, config checks,
// and the operation table kept in step with the capability registry.
import { describe, expect, it } from 'vitest';
import { CAPABILITIES, errorCodeOf } from '@writ/protocol';
import { BTRFS_OPERATIONS, btrfsConfig } from '../src/index.ts';
import { parseFilesystemUsage, parseMountInfo, parseQgroupShow, parseSendStreamHead, parseSubvolumeList, parseSubvolumeShow } from '../src/btrfs/parse.ts';

const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return errorCodeOf(e);
  }
  return 'no error';
};

describe('btrfs operation table', () => {
  it('has exactly one operation per btrfs capability, named alike', () => {
    const caps = [...CAPABILITIES.keys()].filter((n) => n.startsWith('btrfs.')).sort();
    expect(BTRFS_OPERATIONS.map((o) => o.capability).sort()).toEqual(caps);
    expect(caps).toHaveLength(14);
  });

  it('marks deleting storage and taking the pool away as dangerous, and nothing else', () => {
    const dangerous = [...CAPABILITIES.values()]
      .filter((c) => c.name.startsWith('btrfs.') && c.dangerous)
      .map((c) => c.name)
      .sort();
    expect(dangerous).toEqual(['btrfs.pool.format', 'btrfs.pool.unmount', 'btrfs.subvolume.delete']);
  });
});

describe('btrfs config', () => {
  it('needs absolute directories and /dev device paths', () => {
    expect(codeOf(() => btrfsConfig({ mount: 'relative/pool' }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => btrfsConfig({ mount: '/srv/pool', imageDir: 'images' }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => btrfsConfig({ mount: '/srv/pool', devices: ['/etc/passwd'] }))).toBe('CONFIG_INVALID');
    expect(Object.isFrozen(btrfsConfig({ mount: '/srv/pool', devices: ['/dev/sdb'] }))).toBe(true);
  });
});

describe('btrfs parsers', () => {
  it('reads subvolume list lines with uuids and paths', () => {
    const out =
      'ID 256 gen 7 parent 5 top level 5 parent_uuid -                                    received_uuid -                                    uuid 2ae124ea-d879-7042-af52-6283b2df092e path a\n' +
      'ID 257 gen 7 parent 5 top level 5 parent_uuid 2ae124ea-d879-7042-af52-6283b2df092e received_uuid -                                    uuid cc011ccf-d724-914d-a1bd-ea0c0c969cdb path s\n';
    expect(parseSubvolumeList(out)).toEqual([
      { id: 256, generation: 7, parentId: 5, topLevelId: 5, parentUuid: null, receivedUuid: null, uuid: '2ae124ea-d879-7042-af52-6283b2df092e', path: 'a' },
      {
        id: 257,
        generation: 7,
        parentId: 5,
        topLevelId: 5,
        parentUuid: '2ae124ea-d879-7042-af52-6283b2df092e',
        receivedUuid: null,
        uuid: 'cc011ccf-d724-914d-a1bd-ea0c0c969cdb',
        path: 's',
      },
    ]);
    expect(codeOf(() => parseSubvolumeList('garbage line\n'))).toBe('COMMAND_FAILED');
  });

  it('reads subvolume show, flags and snapshots', () => {
    const out = [
      'a',
      '\tName: \t\t\ta',
      '\tUUID: \t\t\tc1395774-9ce0-eb4d-b3ba-ba568e535266',
      '\tParent UUID: \t\t-',
      '\tReceived UUID: \t\t-',
      '\tCreation time: \t\t2026-11-23 09:44:17 +0000',
      '\tSubvolume ID: \t\t256',
      '\tGeneration: \t\t7',
      '\tGen at creation: \t7',
      '\tParent ID: \t\t5',
      '\tTop level ID: \t\t5',
      '\tFlags: \t\t\treadonly',
      '\tSend transid: \t\t0',
      '\tSend time: \t\t2026-11-23 09:44:17 +0000',
      '\tReceive transid: \t0',
      '\tReceive time: \t\t-',
      '\tSnapshot(s):',
      '\t\t\t\tsnap',
      '\t\t\t\tdisks/vm-1',
      '',
    ].join('\n');
    expect(parseSubvolumeShow(out)).toEqual({
      name: 'a',
      uuid: 'c1395774-9ce0-eb4d-b3ba-ba568e535266',
      parentUuid: null,
      receivedUuid: null,
      id: 256,
      generation: 7,
      parentId: 5,
      topLevelId: 5,
      readOnly: true,
      flags: ['readonly'],
      createdAt: '2026-11-23 09:44:17 +0000',
      snapshots: ['snap', 'disks/vm-1'],
    });
  });

  it('reads qgroup tables with limits and paths', () => {
    const out = [
      'Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path ',
      '--------    ----------    ---------  --------------  -------------   ---- ',
      '0/5              16384        16384            none           none   <toplevel>',
      '0/256            16384        16384        52428800           none   a',
      '0/257            16384        16384            none           none   a/b',
      '',
    ].join('\n');
    expect(parseQgroupShow(out)).toEqual([
      { qgroupid: '0/5', referencedBytes: 16384, exclusiveBytes: 16384, maxReferencedBytes: null, maxExclusiveBytes: null, path: '<toplevel>' },
      { qgroupid: '0/256', referencedBytes: 16384, exclusiveBytes: 16384, maxReferencedBytes: 52428800, maxExclusiveBytes: null, path: 'a' },
      { qgroupid: '0/257', referencedBytes: 16384, exclusiveBytes: 16384, maxReferencedBytes: null, maxExclusiveBytes: null, path: 'a/b' },
    ]);
  });

  it('reads filesystem usage in bytes', () => {
    const out = [
      'Overall:',
      '    Device size:\t\t         314572800',
      '    Device allocated:\t\t          92274688',
      '    Device unallocated:\t\t         222298112',
      '    Device missing:\t\t                 0',
      '    Device slack:\t\t                 0',
      '    Used:\t\t\t            425984',
      '    Free (estimated):\t\t         230686720\t(min: 119537664)',
      '    Free (statfs, df):\t\t         229638144',
      '    Data ratio:\t\t\t              1.00',
      '    Metadata ratio:\t\t              2.00',
      '    Global reserve:\t\t           5767168\t(used: 0)',
      '    Multiple profiles:\t\t                no',
      '',
      'Data,single: Size:8388608, Used:0 (0.00%)',
      '   /dev/loop0\t   8388608',
      '',
      'Metadata,DUP: Size:33554432, Used:196608 (0.59%)',
      '   /dev/loop0\t  67108864',
      '',
      'System,DUP: Size:8388608, Used:16384 (0.20%)',
      '   /dev/loop0\t  16777216',
    ].join('\n');
    expect(parseFilesystemUsage(out)).toEqual({
      deviceSizeBytes: 314572800,
      allocatedBytes: 92274688,
      unallocatedBytes: 222298112,
      usedBytes: 425984,
      freeEstimatedBytes: 230686720,
      freeEstimatedMinBytes: 119537664,
      dataRatio: 1,
      metadataRatio: 2,
      globalReserveBytes: 5767168,
      data: { profile: 'single', sizeBytes: 8388608, usedBytes: 0 },
      metadata: { profile: 'dup', sizeBytes: 33554432, usedBytes: 196608 },
      system: { profile: 'dup', sizeBytes: 8388608, usedBytes: 16384 },
    });
  });

  it('reads mountinfo, unescaping spaces in mount points', () => {
    const out = '44 27 0:39 / /tmp/my\\040pool rw,relatime - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/\n';
    expect(parseMountInfo(out)).toEqual([
      { root: '/', mountPoint: '/tmp/my pool', fsType: 'btrfs', source: '/dev/loop0', options: 'rw,space_cache=v2,subvolid=5,subvol=/' },
    ]);
  });

  it('reads the subvolume name and uuid from a send stream header, and refuses other files', () => {
    const tlv = (type: number, value: Buffer) => Buffer.concat([Buffer.from(Uint16Array.of(type, value.length).buffer), value]);
    const attrs = Buffer.concat([tlv(15, Buffer.from('src.1')), tlv(1, Buffer.from('87c0163159157447953d086e3f116baa', 'hex')), tlv(2, Buffer.alloc(8))]);
    const header = Buffer.alloc(10);
    header.writeUInt32LE(attrs.length, 0);
    header.writeUInt16LE(1, 4);
    const stream = Buffer.concat([Buffer.from('btrfs-stream\0', 'latin1'), Buffer.from(Uint32Array.of(1).buffer), header, attrs]);
    expect(parseSendStreamHead(stream)).toEqual({ kind: 'subvol', name: 'src.1', uuid: '87c01631-5915-7447-953d-086e3f116baa' });
    expect(codeOf(() => parseSendStreamHead(Buffer.from('#!/bin/sh\nrm -rf /\n')))).toBe('SAL_INVALID_ARGUMENT');
  });
});
