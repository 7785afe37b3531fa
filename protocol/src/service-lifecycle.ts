// The lifecycle every service's main.ts shares: open resources (each with its releaser), announce readiness
// with one JSON line, wait for the stop signal, release in reverse order within the shutdown grace.
// Pure (timers and promises only): the signal comes from the caller (the CLI turns SIGINT/SIGTERM into it).

/**
 * What Writ's services log through, defined once here. pino's logger (the CLI's `serviceLogger`) fits it, and
 * so does a small object of three functions where pino is not at hand (the boot image's console). protocol
 * depends on no logging library, so this is the shape the services use, not pino's whole type.
 */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** The logger of a service started without one. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

type LifecycleLogger = Pick<Logger, 'info' | 'error'>;

export interface ServiceRun<L> {
  logger: L;
  /** Where the one `{"ready":true,...}` line goes (stdout in `writ`); process managers and tests wait for it. */
  io: { out(line: string): void };
  /** Aborted to stop (the CLI aborts it on SIGINT/SIGTERM); its reason is logged. */
  signal: AbortSignal;
}

/** A resource to release on the way out, named for the log when it overruns. */
export interface Releaser {
  name: string;
  release(): Promise<void>;
}

/**
 * Releases in reverse order of opening, all within `graceMs`. A release that overruns is logged and left
 * behind so that the ones opened before it still get released; the result says whether all finished.
 */
export async function releaseInReverse(releasers: readonly Releaser[], graceMs: number, logger: Pick<LifecycleLogger, 'error'>): Promise<boolean> {
  const deadline = Date.now() + graceMs;
  let clean = true;
  for (const r of [...releasers].reverse()) {
    let timer: NodeJS.Timeout | undefined;
    const overran = new Promise<'overran'>((resolve) => (timer = setTimeout(() => resolve('overran'), Math.max(0, deadline - Date.now()))));
    try {
      if ((await Promise.race([r.release().then(() => 'released' as const), overran])) === 'overran') {
        clean = false;
        logger.error({ resource: r.name, graceMs }, 'not released within the shutdown grace; leaving it');
      }
    } catch (e) {
      clean = false;
      logger.error({ resource: r.name, err: (e as Error).message }, 'releasing failed');
    } finally {
      clearTimeout(timer);
    }
  }
  return clean;
}

/** Waits for `signal` (resolving at once if it has fired already). */
export async function untilAborted(signal: AbortSignal): Promise<void> {
  if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/**
 * Runs a service: `open` opens what it needs (pushing a releaser for each as it goes) and returns the fields
 * of its ready line; then it waits for `run.signal` and releases everything in reverse within `graceMs`.
 * A failure while opening releases what was opened before it is rethrown. Resolves true when all released.
 */
export async function serveUntilAborted(
  run: ServiceRun<LifecycleLogger>,
  graceMs: number,
  open: (releasers: Releaser[]) => Promise<Record<string, unknown>>,
): Promise<boolean> {
  const releasers: Releaser[] = [];
  try {
    const ready = await open(releasers);
    run.io.out(JSON.stringify({ ready: true, ...ready }));
    await untilAborted(run.signal);
    run.logger.info({ sig: run.signal.reason }, 'stopping');
  } catch (e) {
    await releaseInReverse(releasers, graceMs, run.logger);
    throw e;
  }
  return releaseInReverse(releasers, graceMs, run.logger);
}
