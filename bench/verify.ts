// Envelopes verified per second through @writ/protocol against bare crypto.verify on the same bytes.
// Goal: ratio >= 0.9. Rounds alternate the two so machine noise hits both alike; medians are reported.
import { verify as cryptoVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  KeyRing,
  PAYLOAD_TYPES,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  generateKeyPair,
  pae,
  parseJobPayload,
  signEnvelope,
  trustKey,
  verifyEnvelope,
} from '@writ/protocol';

const source = readFileSync(path.resolve(import.meta.dirname, '../scripts/examples/hello.js'), 'utf8');
const kp = generateKeyPair();
const others = Array.from({ length: 50 }, () => trustKey(generateKeyPair().publicKey));
const ring = new KeyRing([...others, trustKey(kp.publicKey)]);
const payload = encodeJobPayload(buildJobPayload({ source, target: { node: 'n1' }, aud: 'bench', caps: ['host.facts'] }));
const raw = new Uint8Array(Buffer.from(encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, payload, [kp]))));
const msg = pae(PAYLOAD_TYPES.job, payload);
const sig = Buffer.from(signEnvelope(PAYLOAD_TYPES.job, payload, [kp]).signatures[0]!.sig, 'base64');
const keyObject = trustKey(kp.publicKey).verifyKey.keyObject;

function rate(fn: () => void, ms: number): number {
  let n = 0;
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let now = t0;
  while (now < end) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
    now = process.hrtime.bigint();
  }
  return (n * 1e9) / Number(now - t0);
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const protocolFn = () => {
  verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: ring });
};
const fullFn = () => {
  parseJobPayload(verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: ring }).payload);
};
const bareFn = () => {
  if (!cryptoVerify(null, msg, keyObject, sig)) throw new Error('bare verify failed');
};
rate(protocolFn, 300);
rate(bareFn, 300);
rate(fullFn, 300);
const p: number[] = [];
const b: number[] = [];
const f: number[] = [];
for (let round = 0; round < 5; round++) {
  p.push(rate(protocolFn, 600));
  b.push(rate(bareFn, 600));
  f.push(rate(fullFn, 600));
}
const ops = median(p);
const base = median(b);
const full = median(f);
console.log(`envelope: ${raw.length} bytes (script ${source.length} bytes), keyring of ${ring.size} keys`);
console.log(`verifyEnvelope (strict parse + checks + node:crypto): ${ops.toFixed(0)} /s`);
console.log(`bare crypto.verify on the same PAE bytes:            ${base.toFixed(0)} /s`);
console.log(`verifyEnvelope + parseJobPayload (schema, sha256):   ${full.toFixed(0)} /s`);
console.log(
  JSON.stringify({
    bench: 'verify',
    ops_per_s: Math.round(ops),
    baseline_ops_per_s: Math.round(base),
    ratio: Number((ops / base).toFixed(3)),
    full_parse_ops_per_s: Math.round(full),
    full_ratio: Number((full / base).toFixed(3)),
  }),
);
