// The one registry of error codes. Code branches on `code`, never on `instanceof`:
// errors cross the sandbox, worker threads, Redis and HTTP as plain JSON.
// docs/errors.md is generated from this table (npm run gen:docs) and a test keeps them in sync.

export interface ErrorSpec {
  /** Default message; a thrower may give a more precise one. */
  readonly message: string;
  /** HTTP status when the error reaches an API client. */
  readonly status: number;
  /** Whether retrying the same work may succeed (transient) or never will (permanent). */
  readonly retryable: boolean;
  /** Area, for the generated docs. */
  readonly area: string;
}

function area<K extends string>(name: string, specs: Record<K, Omit<ErrorSpec, 'area'>>): Record<K, ErrorSpec> {
  return Object.fromEntries(Object.entries(specs).map(([code, s]) => [code, { ...(s as object), area: name }])) as Record<K, ErrorSpec>;
}

export const ERROR_CODES = Object.freeze({
  ...area('json', {
    JSON_SYNTAX: { message: 'The input is not valid JSON', status: 400, retryable: false },
    JSON_INVALID_UTF8: { message: 'The input is not valid UTF-8', status: 400, retryable: false },
    JSON_DUPLICATE_KEY: { message: 'An object has the same key twice', status: 400, retryable: false },
    JSON_UNSAFE_INTEGER: { message: 'An integer is beyond ±(2^53 − 1) and cannot be represented exactly', status: 400, retryable: false },
    JSON_NUMBER_OUT_OF_RANGE: { message: 'A number does not fit a 64-bit float (e.g. 1e400)', status: 400, retryable: false },
    JSON_LONE_SURROGATE: { message: 'A string holds a lone UTF-16 surrogate', status: 400, retryable: false },
    JSON_TOO_DEEP: { message: 'The input nests deeper than allowed', status: 400, retryable: false },
    JSON_TOO_LARGE: { message: 'The input is larger than allowed', status: 413, retryable: false },
  }),
  ...area('envelope', {
    ENVELOPE_MALFORMED: { message: 'The envelope is not a DSSE envelope', status: 400, retryable: false },
    ENVELOPE_TOO_LARGE: { message: 'The envelope is larger than the limit (default 1 MiB)', status: 413, retryable: false },
    PAYLOAD_TYPE_MISMATCH: { message: 'The envelope carries a different payload type than expected', status: 400, retryable: false },
    SIGNATURE_INVALID: { message: 'No signature verifies against a trusted key', status: 401, retryable: false },
    UNKNOWN_KEY: { message: 'The envelope is not signed by any known key', status: 401, retryable: false },
    TOO_MANY_SIGNATURES: { message: 'The envelope carries more signatures than allowed', status: 400, retryable: false },
    UNKNOWN_FIELD: { message: 'The payload has a field this version does not know', status: 400, retryable: false },
    SCHEMA_INVALID: { message: 'The payload does not match its schema', status: 400, retryable: false },
    SCRIPT_HASH_MISMATCH: { message: "The script's sha256 does not match its source", status: 400, retryable: false },
    SCRIPT_TOO_LARGE: { message: 'The script source is larger than the limit (default 256 KiB)', status: 413, retryable: false },
    ENVELOPE_EXPIRED: { message: 'The envelope has expired (exp is in the past)', status: 400, retryable: false },
    ENVELOPE_NOT_YET_VALID: { message: 'The envelope was issued too far in the future (iat beyond the allowed clock skew)', status: 400, retryable: false },
    ENVELOPE_LIFETIME_INVALID: { message: 'exp must be after iat and within the maximum lifetime', status: 400, retryable: false },
    AUDIENCE_MISMATCH: { message: 'The envelope is meant for another cluster (aud)', status: 403, retryable: false },
    CAPABILITY_UNKNOWN: { message: 'The payload requests a capability that does not exist', status: 400, retryable: false },
  }),
  ...area('keys', {
    KEY_FILE_NOT_FOUND: { message: 'The key file does not exist', status: 400, retryable: false },
    KEY_FILE_UNREADABLE: { message: 'The key file cannot be read', status: 400, retryable: false },
    KEY_FILE_INVALID: { message: 'The key file is not a Writ ed25519 key', status: 400, retryable: false },
    KEY_FILE_EXISTS: { message: 'The key file exists already (use --force to overwrite)', status: 400, retryable: false },
    ENVELOPE_FILE_EXISTS: { message: 'The envelope file exists already (use --force to overwrite)', status: 400, retryable: false },
    KEY_INVALID: { message: 'The public key is not a valid, strict ed25519 key', status: 400, retryable: false },
  }),
  ...area('authorisation', {
    CAPABILITY_NOT_GRANTED: { message: 'A requested capability is not granted to the signer', status: 403, retryable: false },
    TARGET_OUT_OF_SCOPE: { message: "The target is outside the signer's scope", status: 403, retryable: false },
    TARGET_MISMATCH: { message: 'The job targets another node', status: 403, retryable: false },
    KEY_REVOKED: { message: 'The signing key has been revoked', status: 403, retryable: false },
    THRESHOLD_NOT_MET: { message: 'A dangerous capability needs more distinct signers', status: 403, retryable: false },
    JOB_ID_CONFLICT: { message: 'A different envelope already uses this job id', status: 409, retryable: false },
    SECURITY_EVENT: { message: 'Work reached a node without a valid envelope and was refused', status: 403, retryable: false },
    JOB_REPLAYED: {
      message: 'A job attempt this node has already started reappeared in its queue; it was refused, not run again',
      status: 409,
      retryable: false,
    },
  }),
  ...area('flows', {
    FLOW_INVALID: {
      message: 'The flow is not a valid graph of steps (unknown or cyclic dependency, bad input reference, duplicate step)',
      status: 400,
      retryable: false,
    },
    FLOW_NOT_FOUND: { message: 'No flow has this id', status: 404, retryable: false },
    FLOW_ID_CONFLICT: { message: 'A different flow envelope already uses this flow id', status: 409, retryable: false },
    FLOW_FINISHED: { message: 'The flow has already finished', status: 409, retryable: false },
    STEP_INPUT_INVALID: { message: "A step's input did not come with a valid signed result of the step it names", status: 403, retryable: false },
    STEP_DEPENDENCY_FAILED: { message: 'A step this step depends on failed or was cancelled, so it did not run', status: 422, retryable: false },
    JOB_CANCELLED: { message: 'The job was cancelled by an operator', status: 409, retryable: false },
  }),
  ...area('sandbox', {
    SCRIPT_ERROR: { message: 'The script threw an error', status: 422, retryable: false },
    SCRIPT_INVALID: { message: 'The script is not an ES module with a default export function', status: 422, retryable: false },
    TIMEOUT: { message: 'The script ran past its deadline and was stopped', status: 422, retryable: false },
    MEMORY_LIMIT: { message: 'The script exceeded its memory limit', status: 422, retryable: false },
    STACK_LIMIT: { message: 'The script exceeded its stack limit', status: 422, retryable: false },
    OUTPUT_TOO_LARGE: { message: 'The result or a message crossing the sandbox boundary is too large', status: 422, retryable: false },
    BOUNDARY_INVALID: { message: 'A value crossing the sandbox boundary is not plain, bounded JSON', status: 422, retryable: false },
    HOST_CALL_INVALID: { message: 'A host call was made with arguments that do not match its schema', status: 422, retryable: false },
    HOST_CALL_DENIED: { message: 'A host call was made without its capability', status: 403, retryable: false },
    WORKER_CRASHED: { message: 'The sandbox worker died unexpectedly', status: 500, retryable: true },
    JOURNAL_UNAVAILABLE: { message: "The node's effect journal cannot be written, so no effect may be applied", status: 503, retryable: true },
    JOURNAL_MISMATCH: {
      message: 'The script made other host calls than an earlier attempt of the same job journaled; it is not deterministic',
      status: 422,
      retryable: false,
    },
  }),
  ...area('sal', {
    SAL_INVALID_ARGUMENT: { message: 'A SAL argument is invalid', status: 400, retryable: false },
    PATH_ESCAPE: { message: 'A name or path escapes its configured root', status: 400, retryable: false },
    COMMAND_FAILED: { message: 'A system command failed', status: 500, retryable: true },
    COMMAND_TIMEOUT: { message: 'A system command ran past its timeout', status: 504, retryable: true },
    TOOL_MISSING: { message: 'A required system tool is not installed', status: 500, retryable: false },
    RESOURCE_NOT_FOUND: { message: 'The resource does not exist', status: 404, retryable: false },
    RESOURCE_CONFLICT: { message: 'A resource of that name exists with a different definition', status: 409, retryable: false },
    HYPERVISOR_API_ERROR: { message: 'The hypervisor API refused the request', status: 502, retryable: false },
    HYPERVISOR_UNREACHABLE: { message: 'The hypervisor API socket does not answer', status: 503, retryable: true },
    MYCELIUM_API_ERROR: { message: 'The mycelium API refused the request', status: 502, retryable: false },
    MYCELIUM_UNREACHABLE: { message: 'The mycelium API does not answer', status: 503, retryable: true },
    MYCELIUM_KEY_INVALID: { message: 'The mycelium key file is missing or corrupt; it is never regenerated silently', status: 500, retryable: false },
    NIX_BUILD_FAILED: { message: 'A Nix build failed', status: 500, retryable: false },
    NIX_PATH_NOT_PINNED: { message: 'The store path is not pinned in the envelope', status: 403, retryable: false },
    NIX_SUBSTITUTER_NOT_ALLOWED: { message: 'The substituter is not configured or not signature-checked', status: 403, retryable: false },
    NIX_ACTIVATION_FAILED: { message: 'The new generation failed its health check and was rolled back', status: 500, retryable: false },
    DEPLOYMENT_INVALID: {
      message: 'The host deployment does not hold together (its jobs, nodes, system or signers do not match)',
      status: 400,
      retryable: false,
    },
    DEPLOYMENT_STATE: { message: 'The host deployment is not in a state that allows this action', status: 409, retryable: false },
    DEPLOYMENT_NODE_TIMEOUT: { message: 'A node did not finish its switch within the host deployment timeout', status: 504, retryable: false },
    VM_STATE_INVALID: { message: 'The VM is not in a state that allows this operation', status: 409, retryable: false },
    VM_OPERATION_UNSUPPORTED: { message: 'The hypervisor driver does not support this operation in this state', status: 501, retryable: false },
    VM_SERIAL_TIMEOUT: { message: 'The marker did not appear on the VM serial log before the timeout', status: 504, retryable: true },
  }),
  ...area('service', {
    BAD_REQUEST: { message: 'The request is malformed', status: 400, retryable: false },
    BODY_TOO_LARGE: { message: 'The request body is larger than allowed', status: 413, retryable: false },
    UNSUPPORTED_MEDIA_TYPE: { message: 'The request body has an unsupported content type', status: 415, retryable: false },
    REQUEST_TIMEOUT: { message: 'The request did not arrive in time', status: 408, retryable: true },
    URI_TOO_LONG: { message: 'The request path is longer than allowed', status: 414, retryable: false },
    HEADERS_TOO_LARGE: { message: 'The request headers are larger than allowed', status: 431, retryable: false },
    NOT_FOUND: { message: 'No such resource', status: 404, retryable: false },
    ROUTE_NOT_FOUND: { message: 'No such route', status: 404, retryable: false },
    UNAUTHENTICATED: { message: 'The request carries no valid credentials', status: 401, retryable: false },
    INTERNAL: { message: 'An internal error occurred', status: 500, retryable: true },
    NOT_READY: { message: 'The service is not ready', status: 503, retryable: true },
    SUPERVISOR_UNAVAILABLE: { message: 'No supervisor is reachable for this target', status: 503, retryable: true },
    SUPERVISOR_NOT_LISTED: {
      message: 'The supervisor key (or a pool it claims) is not listed in the key set in force; an admin adds it with writ keyset supervisor add',
      status: 403,
      retryable: false,
    },
    REDIS_UNAVAILABLE: { message: 'Redis is not reachable', status: 503, retryable: true },
    REDIS_MISCONFIGURED: { message: 'Redis is configured unsafely for Writ (eviction on, or no ACL user)', status: 500, retryable: false },
    REDIS_URL_INVALID: { message: 'The Redis URL is not valid (details.reason says which part)', status: 500, retryable: false },
    LEDGER_UNAVAILABLE: { message: 'The ledger cannot be reached or written (server gone, disk full, read-only or vanished)', status: 503, retryable: true },
    LEDGER_CORRUPT: { message: 'The ledger is damaged; restore a backup (writ ledger check says what is wrong)', status: 500, retryable: false },
    CONFIG_INVALID: { message: 'The configuration is invalid', status: 500, retryable: false },
    EFFECT_FENCED: { message: 'A newer attempt owns this job; the effect was not applied', status: 409, retryable: false },
  }),
  ...area('nodes', {
    NODE_NOT_FOUND: { message: 'No such node', status: 404, retryable: false },
    NODE_UNKNOWN: { message: 'The job targets a node the coord has never registered (check the node id: writ nodes list)', status: 400, retryable: false },
    NODE_NOT_ACTIVE: { message: 'The node is not active and takes no work', status: 409, retryable: true },
    NODE_IDENTITY_MISSING: { message: 'The node identity seed is missing for a node the ledger knows; an operator must rekey', status: 500, retryable: false },
    NODE_IDENTITY_CORRUPT: { message: 'The node identity seed is corrupt; it is never regenerated silently', status: 500, retryable: false },
    NODE_KEY_MISMATCH: { message: 'The node registered before with another key; an operator must rekey it first', status: 409, retryable: false },
    CHALLENGE_INVALID: { message: 'The registration challenge is unknown, used or expired', status: 401, retryable: false },
    HEARTBEAT_REPLAYED: { message: 'The heartbeat was seen before or is older than the last one', status: 409, retryable: false },
    HEARTBEAT_STALE: { message: 'The heartbeat is too old or too far in the future', status: 400, retryable: false },
    TRANSITION_NOT_ALLOWED: { message: 'The node lifecycle does not allow this transition', status: 409, retryable: false },
    KEYSET_MISSING: { message: 'No key set has reached this tier yet; it will retry once one is published', status: 503, retryable: true },
    KEYSET_INVALID: { message: 'The key set does not verify or is malformed', status: 400, retryable: false },
    KEYSET_ROLLBACK: { message: 'The key set is older than one already accepted', status: 409, retryable: false },
    KEYSET_EXPIRED: { message: 'The key set has expired', status: 409, retryable: false },
    AUDIT_CHAIN_BROKEN: { message: 'The audit log hash chain does not verify', status: 500, retryable: false },
    INSTALL_DISK_NOT_FOUND: {
      message: "No disk matches the install plan's disk hints (details.candidates lists the disks seen)",
      status: 422,
      retryable: false,
    },
    INSTALL_DISK_AMBIGUOUS: {
      message: "More than one disk matches the install plan's disk hints; add a serial, WWN or by-id hint",
      status: 422,
      retryable: false,
    },
    INSTALL_DISK_NOT_BLANK: {
      message: 'The install target disk holds a partition table or filesystem the plan did not make; reinstall (writ nodes reinstall) to wipe it',
      status: 409,
      retryable: false,
    },
    INSTALL_FAILED: { message: "The node could not run its class's install plan (details say which step or job)", status: 422, retryable: false },
    INSTALL_PLAN_MISMATCH: { message: "The install report is for another plan than the node's class carries now", status: 409, retryable: false },
    INSTALL_REPORT_REPLAYED: {
      message: 'The install report is not newer than the last one the coord took from this node (a replay)',
      status: 409,
      retryable: false,
    },
  }),
  ...area('cli', {
    USAGE: { message: 'The command line is not valid (see --help)', status: 400, retryable: false },
    WAIT_TIMEOUT: { message: 'The job did not end within --wait-timeout (it may still end later)', status: 504, retryable: true },
    NO_COORD: { message: 'No cluster to talk to: start one with writ dev --keep, or pass --coord URL', status: 503, retryable: false },
    PLAN_FIXTURE_INVALID: {
      message: 'The writ plan fixture is not a JSON object of capability names to answers (docs/plan.md)',
      status: 400,
      retryable: false,
    },
  }),
});

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** The serialised form of every error that crosses a boundary. */
export interface ErrorJSON {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  details?: Record<string, unknown>;
}

export class WritError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    const spec = ERROR_CODES[code];
    super(message ?? spec.message, options);
    this.name = 'WritError';
    this.code = code;
    this.status = spec.status;
    this.retryable = spec.retryable;
    this.details = details;
  }

  toJSON(): ErrorJSON {
    return { code: this.code, message: this.message, retryable: this.retryable, ...(this.details ? { details: this.details } : {}) };
  }
}

export function writError(code: ErrorCode, message?: string, details?: Record<string, unknown>): WritError {
  return new WritError(code, message, details);
}

/** Reads the code of anything thrown, without relying on its class. */
export function errorCodeOf(err: unknown): ErrorCode | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return isErrorCode(code) ? code : undefined;
}

/** Normalises anything thrown into ErrorJSON; unknown errors become INTERNAL without leaking their text when `hideInternal`. */
export function toErrorJSON(err: unknown, hideInternal = false): ErrorJSON {
  const code = errorCodeOf(err);
  if (code) {
    const e = err as { message?: unknown; details?: unknown };
    const out: ErrorJSON = { code, message: typeof e.message === 'string' ? e.message : ERROR_CODES[code].message, retryable: ERROR_CODES[code].retryable };
    if (e.details && typeof e.details === 'object') out.details = e.details as Record<string, unknown>;
    return out;
  }
  const message = hideInternal ? ERROR_CODES.INTERNAL.message : err instanceof Error ? err.message : String(err);
  return { code: 'INTERNAL', message, retryable: true };
}

/** Rebuilds a WritError from its JSON form (after crossing a boundary). */
export function fromErrorJSON(json: ErrorJSON): WritError {
  return new WritError(isErrorCode(json.code) ? json.code : 'INTERNAL', json.message, json.details);
}
