// Schema validation for payloads and host-call arguments. One Ajv instance; unknown fields are their own
// error code (UNKNOWN_FIELD) so that a newer client talking to an older tier gets a precise answer.
import AjvModule, { type ErrorObject, type ValidateFunction } from 'ajv';
import { WritError, type ErrorCode } from './errors.ts';

const Ajv = (AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule;

export type JsonSchema = Record<string, unknown>;

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true, useDefaults: false, coerceTypes: false });

export function compileSchema<T>(schema: JsonSchema): ValidateFunction<T> {
  return ajv.compile<T>(schema);
}

export function describeSchemaError(e: ErrorObject | undefined, what: string): { code: ErrorCode; message: string; field?: string } {
  if (!e) return { code: 'SCHEMA_INVALID', message: `${what} is invalid` };
  const path = e.instancePath || '/';
  if (e.keyword === 'additionalProperties') {
    const field = String((e.params as { additionalProperty?: string }).additionalProperty);
    return { code: 'UNKNOWN_FIELD', message: `${what} has unknown field ${JSON.stringify(field)} at ${path}`, field };
  }
  return { code: 'SCHEMA_INVALID', message: `${what} ${path} ${e.message ?? 'is invalid'}` };
}

/** Validates `value` or throws WritError (UNKNOWN_FIELD / SCHEMA_INVALID, or `code` when given). */
export function assertSchema<T>(validate: ValidateFunction<T>, value: unknown, what: string, code?: ErrorCode): asserts value is T {
  if (validate(value)) return;
  const d = describeSchemaError(validate.errors?.[0], what);
  throw new WritError(code && d.code !== 'UNKNOWN_FIELD' ? code : d.code, d.message, d.field ? { field: d.field } : undefined);
}
