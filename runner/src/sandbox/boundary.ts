// Bounded JSON for the sandbox boundary: every value crossing between guest, worker thread and main thread
// is plain JSON under byte, depth and node caps (X3). Both sides run these checks; neither trusts the other.
import { WritError, type JsonValue } from '@writ/protocol';
import type { BoundaryLimits } from './types.ts';

/** Parses JSON text from the other side of the boundary, enforcing the caps. */
export function decodeBounded(text: string, limits: BoundaryLimits, what: string): JsonValue {
  // UTF-16 length never exceeds the UTF-8 byte count, so this rejects oversize text before measuring it.
  if (text.length > limits.maxBytes || Buffer.byteLength(text, 'utf8') > limits.maxBytes) {
    throw new WritError('OUTPUT_TOO_LARGE', `${what} is larger than ${limits.maxBytes} bytes`, { limit: limits.maxBytes });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new WritError('BOUNDARY_INVALID', `${what} is not valid JSON`);
  }
  checkShape(value, limits, what);
  return value as JsonValue;
}

/** Serialises a host value for the other side; `undefined` at the top becomes null (a void host function). */
export function encodeBounded(value: unknown, limits: BoundaryLimits, what: string): string {
  const top = value === undefined ? null : value;
  checkShape(top, limits, what);
  const text = JSON.stringify(top);
  if (text.length > limits.maxBytes || Buffer.byteLength(text, 'utf8') > limits.maxBytes) {
    throw new WritError('OUTPUT_TOO_LARGE', `${what} is larger than ${limits.maxBytes} bytes`, { limit: limits.maxBytes });
  }
  return text;
}

/**
 * Walks a value without recursion deeper than the cap: only null, booleans, finite numbers, strings, arrays and
 * plain objects, at most `maxDepth` levels and `maxNodes` values. Cycles fail the depth cap.
 */
export function checkShape(value: unknown, limits: BoundaryLimits, what: string): void {
  let nodes = 0;
  const stack: { value: unknown; depth: number }[] = [{ value, depth: 0 }];
  while (stack.length > 0) {
    const { value: v, depth } = stack.pop()!;
    if (++nodes > limits.maxNodes) throw new WritError('BOUNDARY_INVALID', `${what} has more than ${limits.maxNodes} values`, { limit: limits.maxNodes });
    if (v === null || typeof v === 'string' || typeof v === 'boolean') continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new WritError('BOUNDARY_INVALID', `${what} holds a non-finite number`);
      continue;
    }
    if (typeof v !== 'object') throw new WritError('BOUNDARY_INVALID', `${what} holds a ${typeof v}, which is not JSON`);
    if (depth >= limits.maxDepth) throw new WritError('BOUNDARY_INVALID', `${what} nests deeper than ${limits.maxDepth} levels`, { limit: limits.maxDepth });
    if (Array.isArray(v)) {
      for (const item of v) stack.push({ value: item, depth: depth + 1 });
      continue;
    }
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) throw new WritError('BOUNDARY_INVALID', `${what} holds a non-plain object`);
    for (const key of Object.keys(v)) {
      const item = (v as Record<string, unknown>)[key];
      // JSON.stringify drops undefined properties; accept them the same way.
      if (item !== undefined) stack.push({ value: item, depth: depth + 1 });
    }
  }
}
