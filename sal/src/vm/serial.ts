// Waiting for a marker on a VM's serial log: the only reliable signal that a guest reached a point
// (userspace, a service) when nothing else in the guest talks to the host.
import { open, stat } from 'node:fs/promises';
import { WritError } from '@writ/protocol';
import { sleep } from './process.ts';

export interface SerialWaitResult {
  found: true;
  /** Byte offset of the marker in the log. */
  offset: number;
  elapsedMs: number;
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/**
 * Reads the log from `fromOffset` as it grows until `marker` appears. A log that shrank below the offset
 * was truncated by its writer (a hypervisor re-opening it on boot) and is read from the beginning.
 */
export async function waitForSerialMarker(
  file: string,
  marker: string,
  opts: { fromOffset: number; timeoutMs: number; pollMs?: number },
): Promise<SerialWaitResult> {
  const started = Date.now();
  const needle = Buffer.from(marker, 'utf8');
  let position = opts.fromOffset;
  // The last needle.length - 1 bytes already read, so a marker split across two reads is still found.
  let carry = Buffer.alloc(0);
  let tail = Buffer.alloc(0);
  for (;;) {
    const size = await sizeOf(file);
    if (size < position) {
      position = 0;
      carry = Buffer.alloc(0);
    }
    if (size > position) {
      const fh = await open(file, 'r');
      try {
        const chunk = Buffer.alloc(size - position);
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, position);
        const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
        const at = window.indexOf(needle);
        if (at >= 0) return { found: true, offset: position - carry.length + at, elapsedMs: Date.now() - started };
        position += bytesRead;
        carry = window.subarray(Math.max(0, window.length - (needle.length - 1)));
        tail = Buffer.concat([tail, chunk.subarray(0, bytesRead)]).subarray(-2000);
      } finally {
        await fh.close();
      }
    }
    if (Date.now() - started >= opts.timeoutMs) {
      throw new WritError('VM_SERIAL_TIMEOUT', `${JSON.stringify(marker)} did not appear on ${file} within ${opts.timeoutMs} ms`, {
        marker,
        timeoutMs: opts.timeoutMs,
        tail: tail.toString('utf8').slice(-1000),
      });
    }
    await sleep(opts.pollMs ?? 100);
  }
}
