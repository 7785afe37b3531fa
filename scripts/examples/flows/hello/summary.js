// summary.js: takes the other steps' results as inputs. args.inputs.facts is the fan-out step's result by
// node; args.inputs.tries is the `attempt` field of the flaky step's result. Each reached this node inside a
// result signed by the node that produced it.
export default async function summary(args, ctx) {
  const nodes = Object.keys(args.inputs.facts);
  const threads = nodes.reduce((n, id) => n + args.inputs.facts[id].threads, 0);
  ctx.log.info(`${nodes.length} node(s), ${threads} threads in all; the flaky step took ${args.inputs.tries} attempts`);
  return { nodes, threads, flakyAttempts: args.inputs.tries };
}
