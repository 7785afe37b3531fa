// The supervisor-report seam: what a supervisor forwards to the coord (POST /v1/reports or in process),
// signed with its own key (payload type `result`). The supervisor's signature says who carried the entries;
// each entry keeps the runner's own signature, which is what the coord trusts for the outcome (T14).
import { assertSchema, compileSchema } from '../schema.ts';
import { parseStrictJson } from '../strict-json.ts';
import { MAX_RUNNER_BATCH_BYTES } from './runner-events.ts';

export type ReportEntry =
  /** A runner's signed event batch, exactly as read from the stream. */
  | { envelope: string }
  /** A stream entry that was not shaped like one Writ writes; the coord records it as a security event. */
  | { malformed: string };

export interface SupervisorReport {
  supervisor: string;
  /** Unique per report from this supervisor; for logs and audits. */
  seq: string;
  entries: ReportEntry[];
}

export const MAX_REPORT_ENTRIES = 1000;
/** A supervisor starts a new report past this many bytes of entries; a report's payload may not exceed MAX_REPORT_BYTES. */
export const REPORT_TARGET_BYTES = 4 * 1024 * 1024;
export const MAX_REPORT_BYTES = REPORT_TARGET_BYTES + MAX_RUNNER_BATCH_BYTES + 64 * 1024;
/** The report envelope (base64 payload and signature) as a request body. */
export const MAX_REPORT_ENVELOPE_BYTES = Math.ceil((MAX_REPORT_BYTES * 4) / 3) + 4096;

const reportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['supervisor', 'seq', 'entries'],
  properties: {
    supervisor: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    seq: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' },
    entries: {
      type: 'array',
      maxItems: MAX_REPORT_ENTRIES,
      items: {
        oneOf: [
          {
            type: 'object',
            additionalProperties: false,
            required: ['envelope'],
            properties: { envelope: { type: 'string', maxLength: MAX_RUNNER_BATCH_BYTES } },
          },
          { type: 'object', additionalProperties: false, required: ['malformed'], properties: { malformed: { type: 'string', maxLength: 1024 } } },
        ],
      },
    },
  },
} as const;

const validateReport = compileSchema<SupervisorReport>(reportSchema);

export function encodeSupervisorReport(report: SupervisorReport): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(report));
}

/** Strict parse of a verified report payload. */
export function parseSupervisorReport(bytes: Uint8Array): SupervisorReport {
  const doc = parseStrictJson(bytes, { maxBytes: MAX_REPORT_BYTES, maxDepth: 8 });
  assertSchema(validateReport, doc, 'supervisor report');
  return doc;
}
