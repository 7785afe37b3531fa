// disk.js: prepares the VM's disk on one node: a writable btrfs snapshot of a base image (O(1) in its size).
// Its result's `disk` (the image file's path) is the vm step's input.
export default async function disk(args, ctx) {
  const d = await ctx.sal.btrfs.disk.clone({ base: args.base, name: args.name, file: args.file });
  ctx.log.info(`disk ${d.path}: ${d.created ? `cloned from ${args.base}` : 'already there'}`);
  return { disk: `${d.path}/${args.file}`, created: d.created };
}
