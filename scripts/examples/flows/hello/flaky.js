// flaky.js: fails on its first attempt to show a step's retries (ctx.job.attempt counts them).
export default async function flaky(args, ctx) {
  if (ctx.job.attempt < 2) throw new Error(`attempt ${ctx.job.attempt} fails on purpose; the flow retries this step`);
  ctx.log.info(`attempt ${ctx.job.attempt} succeeds`);
  return { attempt: ctx.job.attempt };
}
