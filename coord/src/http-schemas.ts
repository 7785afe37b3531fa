// JSON schemas the coord's routes share.

/** A DSSE envelope as a request body (its signature is checked by the handler, over the payload bytes). */
export const envelopeSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['payloadType', 'payload', 'signatures'],
  properties: {
    payloadType: { type: 'string', maxLength: 200 },
    payload: { type: 'string' },
    signatures: {
      type: 'array',
      minItems: 1,
      maxItems: 16,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['keyid', 'sig'],
        properties: { keyid: { type: 'string', maxLength: 200 }, sig: { type: 'string', maxLength: 200 } },
      },
    },
  },
} as const;
