import type { JsonSchema } from '../schema.ts';

/** One capability: a host function a script may call when its envelope requests and is granted it. */
export interface CapabilitySpec {
  /** Dotted name, e.g. `vm.create`; also the path under `ctx.sal` in scripts. */
  readonly name: string;
  /** Dangerous capabilities can require k-of-n distinct signers (T8). */
  readonly dangerous: boolean;
  /**
   * True when the call only reads: it changes nothing on the node. Every other call is an effect, journaled
   * with an intent before it and fenced by attempt number (R2, R3). Unmarked means effect: the safe default.
   */
  readonly readOnly?: boolean;
  readonly summary: string;
  /** JSON schema of the single argument object the host function takes. */
  readonly args: JsonSchema;
}

/** Helper for the per-area tables: an object schema with no unknown fields. */
export function argsObject(properties: Record<string, JsonSchema>, required: string[] = []): JsonSchema {
  return { type: 'object', additionalProperties: false, properties, required };
}

export const NAME_SCHEMA: JsonSchema = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' };
