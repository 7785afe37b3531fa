// The audit chain's bytes are fixed: entries already stored must still verify after any change to the code.
// The preimage and hash below were computed by the ledger's own canonical JSON copy before it gave way to
// @writ/protocol's canonicalJson; the shared one must give the same bytes for everything the ledger stores.
import { describe, expect, it } from 'vitest';
import { auditHash, auditPreimage } from '../src/ledger/audit.ts';
import { storableJson } from '../src/ledger/json.ts';

describe('audit hash bytes', () => {
  it('hashes a stored entry to the same preimage and hash as before', () => {
    const data = storableJson({
      z: 1,
      a: [true, null, -0, 0.1, 1e21, 2 ** 53, 'é\u2028"\\'],
      é: { b: 1, B: 2, '10': 3, '9': 4 },
      '\u{1F600}': 'x',
      '\uFB01': 'y',
      nested: { u: undefined, n: NaN, lone: '\uD800' },
      at: new Date(0),
    });
    const e = { seq: 7, at: new Date('2026-01-02T03:04:05.678Z'), kind: 'test.kind', actor: 'actor', subject: 'subj', data, prevHash: 'ab'.repeat(32) };
    expect(auditPreimage(e)).toBe(
      '{"actor":"actor","data":{"a":[true,null,0,0.1,1e+21,9007199254740992,"é\u2028\\"\\\\"],"at":"1970-01-01T00:00:00.000Z","nested":{"lone":"\uFFFD","n":null},"z":1,"é":{"10":3,"9":4,"B":2,"b":1},"\u{1F600}":"x","\uFB01":"y"},' +
        '"kind":"test.kind","prev_hash":"abababababababababababababababababababababababababababababababab","seq":7,"subject":"subj","time":"2026-01-02T03:04:05.678Z"}',
    );
    expect(auditHash(e)).toBe('3726116e13973ab865c6b598de651ff9138630510d6375640610732f93edf680');
  });
});
