// Retry delays, written once: the node agent's phone-home, the supervisor's report delivery, the CLI's
// requests and event streams, and the coord's job retries all wait this long after their n-th failure.

/**
 * The delay after `failures` failures in a row (0 for the first retry): `baseMs` doubling with each failure,
 * capped at `maxMs`. With `random` (for many clients that fail together), jittered to between 50% and 100%.
 */
export function backoffDelay(failures: number, baseMs: number, maxMs: number, random?: () => number): number {
  const capped = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, failures), 30));
  return random ? Math.round(capped * (0.5 + random() * 0.5)) : capped;
}
