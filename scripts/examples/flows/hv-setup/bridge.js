// bridge.js: runs on every node labelled role=hv (a fan-out step) and makes sure the VM bridge exists there.
export default async function bridge(args, ctx) {
  const b = await ctx.sal.net.bridge.ensure({ name: args.bridge });
  ctx.log.info(`bridge ${args.bridge}: ${b.created ? 'created' : 'already there'}`);
  return { bridge: args.bridge, created: b.created };
}
