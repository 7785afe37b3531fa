// The capability check both sides of a host call run (X5): once in the sandbox worker before a call leaves
// the thread, and again in the privileged broker on the main thread before it reaches the host table.
import { CAPABILITIES, WritError, compileSchema, describeSchemaError, type JsonValue } from '@writ/protocol';

type Validate = ReturnType<typeof compileSchema>;

const validators = new Map<string, Validate>();

function validatorFor(name: string): Validate | undefined {
  let validate = validators.get(name);
  if (!validate) {
    const spec = CAPABILITIES.get(name);
    if (!spec) return undefined;
    validate = compileSchema(spec.args);
    validators.set(name, validate);
  }
  return validate;
}

/** Throws HOST_CALL_DENIED unless `name` is a known capability granted to the job, HOST_CALL_INVALID unless `args` match its schema. */
export function checkCapabilityCall(granted: readonly string[], name: string, args: JsonValue): void {
  if (!granted.includes(name)) throw new WritError('HOST_CALL_DENIED', `the job was not granted capability ${JSON.stringify(name)}`, { capability: name });
  const validate = validatorFor(name);
  if (!validate) throw new WritError('HOST_CALL_DENIED', `no capability is named ${JSON.stringify(name)}`, { capability: name });
  if (!validate(args)) {
    const d = describeSchemaError(validate.errors?.[0], `${name} arguments`);
    throw new WritError('HOST_CALL_INVALID', d.message, { capability: name, ...(d.field ? { field: d.field } : {}) });
  }
}
