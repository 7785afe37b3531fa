// The enrollment inventory a node sends with its registration: what enrollment rules match on (MACs, DMI
// serial and product, disks with serial/WWN/model/size, NICs with driver and speed, CPU, memory), read
// from /sys and /proc only. `sysRoot` lets tests read a prepared tree.
import { readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { listSorted } from '@writ/sal';
import { PAYLOAD_TYPES, type InventoryDisk, type InventoryNic, type NodeInventory } from '@writ/protocol';

export interface InventoryOptions {
  /** True when the node runs without a state partition (its identity is new at every boot). */
  diskless: boolean;
  /** Root that /sys, /proc and /dev are read under (default '/'). */
  sysRoot?: string;
}

async function text(p: string): Promise<string | null> {
  try {
    const s = (await readFile(p, 'utf8')).trim();
    return s === '' ? null : s;
  } catch {
    return null;
  }
}

async function linkBase(p: string): Promise<string | null> {
  try {
    return path.basename(await readlink(p));
  } catch {
    return null;
  }
}

async function disks(root: string): Promise<InventoryDisk[]> {
  const byIdDir = path.join(root, 'dev/disk/by-id');
  const byId = new Map<string, string[]>();
  for (const link of await listSorted(byIdDir)) {
    const target = await linkBase(path.join(byIdDir, link));
    if (target) byId.set(target, [...(byId.get(target) ?? []), link]);
  }
  const out: InventoryDisk[] = [];
  for (const name of await listSorted(path.join(root, 'sys/block'))) {
    if (/^(loop|ram|zram|dm-|sr|md|nbd)/.test(name)) continue;
    const base = path.join(root, 'sys/block', name);
    const sectors = Number((await text(`${base}/size`)) ?? 0);
    out.push({
      name,
      sizeBytes: sectors * 512,
      model: await text(`${base}/device/model`),
      // virtio-blk puts the serial on the disk, SCSI/SATA/NVMe on the device.
      serial: (await text(`${base}/serial`)) ?? (await text(`${base}/device/serial`)),
      wwn: (await text(`${base}/wwid`)) ?? (await text(`${base}/device/wwid`)),
      byId: byId.get(name) ?? [],
      rotational: (await text(`${base}/queue/rotational`)) === '1',
    });
  }
  return out;
}

async function nics(root: string): Promise<InventoryNic[]> {
  const out: InventoryNic[] = [];
  for (const name of await listSorted(path.join(root, 'sys/class/net'))) {
    const base = path.join(root, 'sys/class/net', name);
    // Physical NICs have a device; lo, bridges, taps and veths do not.
    const driver = await linkBase(`${base}/device/driver`);
    if (driver === null) continue;
    const mac = (await text(`${base}/address`))?.toLowerCase();
    if (!mac || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) continue;
    const speed = Number(await text(`${base}/speed`));
    out.push({ name, mac, driver, speedMbps: Number.isInteger(speed) && speed > 0 ? speed : null, carrier: (await text(`${base}/carrier`)) === '1' });
  }
  return out;
}

/** Collects the enrollment inventory of this machine. */
export async function collectInventory(opts: InventoryOptions): Promise<NodeInventory> {
  const root = opts.sysRoot ?? '/';
  const dmi = path.join(root, 'sys/class/dmi/id');
  const cpuinfo = (await text(path.join(root, 'proc/cpuinfo'))) ?? '';
  const meminfo = (await text(path.join(root, 'proc/meminfo'))) ?? '';
  return {
    type: PAYLOAD_TYPES.nodeInventory,
    diskless: opts.diskless,
    dmi: {
      vendor: await text(`${dmi}/sys_vendor`),
      product: await text(`${dmi}/product_name`),
      serial: await text(`${dmi}/product_serial`),
      uuid: await text(`${dmi}/product_uuid`),
    },
    cpu: { model: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown', threads: (cpuinfo.match(/^processor\s*:/gm) ?? []).length },
    memoryBytes: Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0) * 1024,
    nics: await nics(root),
    disks: await disks(root),
  };
}
