// A flow step's job row stores its bundle with the signed flow named by hash; what is sent is the full bundle,
// byte for byte the one the step was started with.
import { describe, expect, it } from 'vitest';
import { encodeStepBundle, errorCodeOf, isStepBundle } from '@writ/protocol';
import { isStoredStep, sendableEnvelope, storedStepText } from '../src/flows/stored-step.ts';

const flow = JSON.stringify({ payloadType: 'application/vnd.writ.flow+json', payload: 'eyJ4IjoxfQ', signatures: [{ keyid: 'k', sig: 's' }] });
const evidence = [{ step: 'disk', node: 'n1', publicKey: 'A'.repeat(43), result: '{"payload":"x"}' }];

describe('stored flow steps', () => {
  it('expand to exactly the bundle the step was started with, looking the flow up by its hash', async () => {
    const stored = storedStepText({ flowEnvelopeSha256: 'f'.repeat(64), step: 'vm', node: 'n1', evidence });
    expect(isStoredStep(stored)).toBe(true);
    expect(isStepBundle(stored)).toBe(false); // never mistaken for something a tier verifies
    expect(stored).not.toContain(flow);
    const asked: string[] = [];
    const sent = await sendableEnvelope(stored, async (sha) => (asked.push(sha), flow));
    expect(asked).toEqual(['f'.repeat(64)]);
    expect(sent).toBe(encodeStepBundle({ flow, step: 'vm', node: 'n1', evidence }));
  });

  it('leave a job envelope and a full bundle as they are, and refuse a step whose flow the ledger lacks', async () => {
    const job = '{"payloadType":"application/vnd.writ.job+json","payload":"e30","signatures":[]}';
    const lookup = async () => {
      throw new Error('not looked up');
    };
    expect(await sendableEnvelope(job, lookup)).toBe(job);
    const full = encodeStepBundle({ flow, step: 'vm', node: 'n1', evidence });
    expect(await sendableEnvelope(full, lookup)).toBe(full);
    const err = await sendableEnvelope(
      storedStepText({ flowEnvelopeSha256: '0'.repeat(64), step: 'vm', node: 'n1', evidence: [] }),
      async () => undefined,
    ).catch((e: unknown) => e);
    expect(errorCodeOf(err)).toBe('INTERNAL');
  });
});
