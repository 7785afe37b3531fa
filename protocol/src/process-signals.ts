// Process signals, handled in one place for every Writ process that runs until stopped (the CLI's services,
// `writ dev`, `writ runner`, and the boot image's node agent).

/**
 * Ends the process `afterMs` from now if something still holds it then (a connection that keeps reconnecting,
 * a request with a longer timeout). The timer is unref'd: a process that ends by itself is not held by it.
 */
export function exitIfStillRunning(afterMs: number, why: string): void {
  setTimeout(() => {
    process.stderr.write(`writ: ${why}; exiting\n`);
    process.exit(process.exitCode ?? 1);
  }, afterMs).unref();
}

/** How long after the shutdown grace a service that has not ended is ended (its own stop logs what overran). */
export const EXIT_AFTER_GRACE_MS = 1000;

/**
 * The one place process signals are handled: `run` gets a signal that SIGINT or SIGTERM aborts (its reason is
 * the signal's name) and services stop on. The listeners go after the first signal, so a second Ctrl-C gets
 * Node's default and ends a stop that hangs, and when `run` returns or throws, so none outlive it.
 * With `graceMs`, the process ends at the latest EXIT_AFTER_GRACE_MS after the grace once a signal came, and
 * shortly after `run` failed, whatever still holds it (R6: a service whose Redis or coord is gone still stops).
 */
export async function runUntilProcessSignal<T>(run: (stop: AbortSignal) => Promise<T>, opts: { graceMs?: number } = {}): Promise<T> {
  const stop = new AbortController();
  const detach = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  const onSignal = (sig: NodeJS.Signals) => {
    detach();
    stop.abort(sig);
    if (opts.graceMs !== undefined)
      exitIfStillRunning(
        opts.graceMs + EXIT_AFTER_GRACE_MS,
        `still running ${EXIT_AFTER_GRACE_MS} ms after the shutdown grace (${opts.graceMs} ms) since ${sig}`,
      );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await run(stop.signal);
  } catch (e) {
    if (opts.graceMs !== undefined) exitIfStillRunning(EXIT_AFTER_GRACE_MS, 'still running after the service failed');
    throw e;
  } finally {
    detach();
  }
}
