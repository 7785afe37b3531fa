// writ verify ENVELOPE --pubkey FILE|KEYID: says in words what holds and, on failure, exactly what failed.
import { readFile } from 'node:fs/promises';
import {
  KeyRing,
  PAYLOAD_TYPES,
  WritError,
  checkAudience,
  checkJobTimes,
  parseEnvelope,
  parseJobPayload,
  payloadKindOf,
  toErrorJSON,
  trustKey,
  verifyEnvelope,
  type ErrorJSON,
  type JobPayload,
  type PayloadType,
} from '@writ/protocol';
import { humanDuration, parse } from '../args.ts';
import { resolvePublicKey } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ verify ENVELOPE --pubkey FILE|KEYID [--pubkey ...] [--aud CLUSTER] [--type KIND] [--json]

Checks a signed envelope step by step: DSSE structure, payload type, signature against the given
public key(s), strict payload parse, script hash, time window and (with --aud) audience.
Exit code 0 when every check holds, 1 otherwise (the failing check names its error code).

  --pubkey   a key file (private or .pub), a base64url public key, or a key id in $WRIT_HOME/keys
  --type     payload kind expected (default: job)

example:
  writ verify hello.env.json --pubkey alice.key.pub`;

interface Check {
  check: string;
  ok: boolean;
  detail: string;
  error?: ErrorJSON;
}

async function verify(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { pubkey: { type: 'string', multiple: true }, aud: { type: 'string' }, type: { type: 'string', default: 'job' } },
    { min: 1, max: 1, usage: 'writ verify ENVELOPE --pubkey FILE|KEYID' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  if (!values.pubkey?.length) throw new WritError('USAGE', '--pubkey FILE|KEYID is required');
  const kind = values.type as keyof typeof PAYLOAD_TYPES;
  const expectedType: PayloadType | undefined = PAYLOAD_TYPES[kind];
  if (!expectedType) throw new WritError('USAGE', `--type must be one of ${Object.keys(PAYLOAD_TYPES).join(', ')}`);
  const keys = await Promise.all(values.pubkey.map((f) => resolvePublicKey(f, ctx.env)));
  const file = positionals[0]!;
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (e) {
    throw new WritError('USAGE', `cannot read envelope ${file} (${(e as NodeJS.ErrnoException).code})`);
  }

  const checks: Check[] = [];
  let job: JobPayload | undefined;
  const step = (check: string, fn: () => string): boolean => {
    try {
      checks.push({ check, ok: true, detail: fn() });
      return true;
    } catch (e) {
      const error = toErrorJSON(e);
      checks.push({ check, ok: false, detail: error.message, error });
      return false;
    }
  };
  const nowS = ctx.now();
  let payload: Uint8Array | undefined;
  const ok =
    step('envelope', () => {
      const env = parseEnvelope(new Uint8Array(raw));
      const k = payloadKindOf(env.payloadType);
      return `DSSE envelope, ${env.signatures.length} signature(s), payload type ${env.payloadType}${k ? ` (${k})` : ' (unknown kind)'}`;
    }) &&
    step('signature', () => {
      let v;
      try {
        v = verifyEnvelope(new Uint8Array(raw), { payloadType: expectedType, keys: new KeyRing(keys.map((k) => trustKey(k.publicKey))) });
      } catch (e) {
        if ((e as WritError).code !== 'UNKNOWN_KEY') throw e;
        const hints = parseEnvelope(new Uint8Array(raw))
          .signatures.map((s) => s.keyid)
          .join(', ');
        throw new WritError('UNKNOWN_KEY', `not signed by ${keys.map((k) => k.keyid).join(' or ')} (the envelope names ${hints}; key ids are hints only)`);
      }
      payload = v.payload;
      return `verified by ${v.signers.map((s) => s.keyid).join(', ')}`;
    }) &&
    (kind !== 'job' ||
      (step('payload', () => {
        job = parseJobPayload(payload!);
        return `job v1 "${job.id}", strict parse ok, no unknown fields`;
      }) &&
        step('script', () => `sha256 ${job!.script.sha256.slice(0, 16)}… matches the source (${Buffer.byteLength(job!.script.source)} bytes)`) &&
        step('time', () => {
          checkJobTimes(job!, nowS);
          return `issued ${new Date(job!.iat * 1000).toISOString()}, expires in ${humanDuration(job!.exp - nowS)}`;
        }) &&
        step('audience', () => {
          if (values.aud) checkAudience(job!, values.aud);
          return values.aud ? `for cluster "${job!.aud}"` : `for cluster "${job!.aud}" (not checked: pass --aud)`;
        })));

  if (values.json) {
    printJson(io, {
      ok,
      checks,
      ...(job ? { job: { id: job.id, target: job.target, caps: job.caps, limits: job.limits, aud: job.aud, iat: job.iat, exp: job.exp } } : {}),
    });
  } else {
    for (const c of checks) io.out(`${c.ok ? '✓' : '✗'} ${c.check.padEnd(9)} ${c.ok ? c.detail : `${c.error!.code}: ${c.detail}`}`);
    if (ok && job) {
      const target =
        'node' in job.target
          ? `node ${job.target.node}`
          : `labels ${Object.entries(job.target.selector)
              .map(([k, v]) => `${k}=${v}`)
              .join(',')}`;
      io.out(`job ${job.id} → ${target}; caps: ${job.caps.join(', ') || '(none)'}; limits: ${job.limits.timeoutMs} ms, ${job.limits.memoryMiB} MiB`);
    }
    if (!ok) io.err(`writ: verification failed: ${checks.at(-1)!.error!.code}`);
  }
  return ok ? EXIT.ok : EXIT.failure;
}

export const verifyCommand: Command = { name: 'verify', summary: 'check a signed envelope and say what holds', help: HELP, run: verify };
