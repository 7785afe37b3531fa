// vm.js: creates and boots the VM on the disk the disk step prepared (args.inputs.disk, taken from that
// step's signed result), on a tap attached to the bridge every hypervisor node now has.
export default async function vm(args, ctx) {
  const ready = Object.keys(args.inputs.bridges);
  ctx.log.info(`bridge ${args.bridge} is on ${ready.length} node(s): ${ready.join(', ')}`);
  await ctx.sal.net.tap.ensure({ name: args.tap, bridge: args.bridge });
  const v = await ctx.sal.vm.create({
    name: args.name, vcpus: 1, memoryMiB: 256, kernel: args.kernel, initramfs: args.initramfs, cmdline: args.cmdline,
    disks: [{ path: args.inputs.disk }], nics: [{ tap: args.tap, mac: args.mac }],
  });
  const boot = await ctx.sal.vm.boot({ name: args.name });
  ctx.log.info(`vm ${args.name}: ${v.created ? 'created' : 'already defined'}, ${boot.changed ? 'booted' : 'already running'}`);
  return { name: args.name, disk: args.inputs.disk, info: await ctx.sal.vm.info({ name: args.name }) };
}
