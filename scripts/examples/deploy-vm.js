// deploy-vm.js: puts one VM on a node. Clones its disk from a base image subvolume (O(1) on btrfs), makes
// sure a bridge and a tap on it exist, creates and boots the VM from a kernel and initramfs with that disk
// and a NIC on the tap, waits for a marker on its serial console, and returns the VM's info. Every step is
// an ensure, so running it again with the same arguments changes nothing and says so.
//
// Capabilities: btrfs.disk.clone, net.bridge.ensure, net.tap.ensure, vm.create, vm.boot, vm.serial.wait,
// vm.info. The node's VM `imagesRoot` must be its btrfs pool root: the clone's pool path is the VM's disk path.

/**
 * @typedef {object} DeployArgs
 * @property {string} name        VM name; also the name of its disk clone.
 * @property {string} base        base image subvolume, relative to the pool root (holds `diskFile`).
 * @property {string} bridge      bridge to create or reuse (a name with the node's net prefix).
 * @property {string} tap         tap for the VM's NIC, attached to `bridge`.
 * @property {string} mac         the NIC's MAC address.
 * @property {string} kernel      relative to the node's VM boot root.
 * @property {string} initramfs   relative to the node's VM boot root.
 * @property {string} cmdline     kernel command line.
 * @property {string} marker      serial console line that says the guest is up.
 * @property {string} [diskFile]  image file inside the base subvolume (default `disk.raw`).
 * @property {number} [vcpus]     default 1.
 * @property {number} [memoryMiB] default 256.
 * @property {number} [markerTimeoutMs] default 60000.
 */

/**
 * A granted host function, or a clear failure naming the capability the envelope lacks.
 * @template T
 * @param {T | undefined} fn
 * @param {string} capability
 * @returns {T}
 */
function granted(fn, capability) {
  if (typeof fn !== 'function') throw new Error(`deploy-vm needs the ${capability} capability`);
  return fn;
}

/**
 * @param {import('../writ.d.ts').JsonValue} rawArgs
 * @param {import('../writ.d.ts').WritContext} ctx
 * @returns {Promise<import('../writ.d.ts').JsonValue>}
 */
export default async function deployVm(rawArgs, ctx) {
  const args = /** @type {DeployArgs} */ (/** @type {unknown} */ (rawArgs));
  for (const key of ['name', 'base', 'bridge', 'tap', 'mac', 'kernel', 'initramfs', 'cmdline', 'marker']) {
    if (typeof args?.[/** @type {keyof DeployArgs} */ (key)] !== 'string') throw new Error(`deploy-vm: argument ${key} must be a string`);
  }
  const sal = ctx.sal;
  const diskFile = args.diskFile ?? 'disk.raw';

  const disk = /** @type {{ path: string; created: boolean }} */ (
    await granted(sal.btrfs?.disk?.clone, 'btrfs.disk.clone')({ base: args.base, name: args.name, file: diskFile })
  );
  ctx.log.info(`disk ${disk.path}: ${disk.created ? `cloned from ${args.base}` : 'already there'}`);

  const bridge = /** @type {{ created: boolean; changed: boolean }} */ (await granted(sal.net?.bridge?.ensure, 'net.bridge.ensure')({ name: args.bridge }));
  const tap = /** @type {{ created: boolean; changed: boolean }} */ (await granted(sal.net?.tap?.ensure, 'net.tap.ensure')({ name: args.tap, bridge: args.bridge }));
  ctx.log.info(`bridge ${args.bridge}: ${bridge.created ? 'created' : 'already there'}; tap ${args.tap}: ${tap.created ? 'created' : 'already there'}`);

  const vm = /** @type {{ created: boolean; state: string }} */ (
    await granted(sal.vm?.create, 'vm.create')({
      name: args.name,
      vcpus: args.vcpus ?? 1,
      memoryMiB: args.memoryMiB ?? 256,
      kernel: args.kernel,
      initramfs: args.initramfs,
      cmdline: args.cmdline,
      disks: [{ path: `${disk.path}/${diskFile}` }],
      nics: [{ tap: args.tap, mac: args.mac }],
    })
  );
  ctx.log.info(`vm ${args.name}: ${vm.created ? 'created' : `already defined (${vm.state})`}`);

  const boot = /** @type {{ changed: boolean; state: string }} */ (await granted(sal.vm?.boot, 'vm.boot')({ name: args.name }));
  ctx.log.info(`vm ${args.name}: ${boot.changed ? 'booted' : 'already running'}`);

  // Since the last boot: on a second run the marker of the boot that is still running is found at once.
  const serial = /** @type {{ elapsedMs: number }} */ (
    await granted(sal.vm?.serial?.wait, 'vm.serial.wait')({ name: args.name, marker: args.marker, timeoutMs: args.markerTimeoutMs ?? 60_000 })
  );
  ctx.log.info(`vm ${args.name}: marker seen after ${serial.elapsedMs} ms of waiting`);

  const info = await granted(sal.vm?.info, 'vm.info')({ name: args.name });
  const created = { disk: disk.created, bridge: bridge.created, tap: tap.created, vm: vm.created, booted: boot.changed };
  const nothingNew = !Object.values(created).some(Boolean);
  ctx.log.info(nothingNew ? `vm ${args.name} was already deployed: nothing new was created` : `vm ${args.name} deployed`);
  return { name: args.name, nothingNew, created, markerSeen: true, info };
}
