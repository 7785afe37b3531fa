// facts.js: runs once on every node the step's selector matches (a fan-out step) and returns a few facts.
export default async function facts(args, ctx) {
  const f = await ctx.sal.host.facts();
  ctx.log.info(`${f.hostname}: ${f.cpu.threads} threads, kernel ${f.kernel.release}`);
  return { hostname: f.hostname, threads: f.cpu.threads, memoryMiB: Math.round(f.memory.totalBytes / 2 ** 20) };
}
