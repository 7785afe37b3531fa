// hello.js: the first script. Reads the node's facts through the granted `host.facts`
// capability, logs a few lines and returns a summary as the job's result.
export default async function hello(args, ctx) {
  const who = args?.name ?? 'world';
  ctx.log.info(`hello, ${who}`);
  const facts = await ctx.sal.host.facts();
  ctx.log.info(`running on ${facts.hostname}: ${facts.cpu.threads} threads, ${Math.round(facts.memory.totalBytes / 2 ** 20)} MiB`);
  ctx.log.info(`kernel ${facts.kernel.release} (${facts.kernel.arch})`);
  return { greeting: `hello, ${who}`, hostname: facts.hostname, threads: facts.cpu.threads, memoryMiB: Math.round(facts.memory.totalBytes / 2 ** 20) };
}
