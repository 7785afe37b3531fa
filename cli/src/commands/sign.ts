// writ sign SCRIPT.js --key FILE ... | writ sign --add-signature ENVELOPE --key FILE
import { readFile } from 'node:fs/promises';
import {
  CAPABILITIES,
  PAYLOAD_TYPES,
  WritError,
  addSignature,
  fromErrorJSON,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  parseEnvelope,
  parseJobPayload,
  parseStrictJson,
  signEnvelope,
  type JobTarget,
  type JsonValue,
  type KeyPair,
} from '@writ/protocol';
import { checkScriptCompiles } from '@writ/runner';
import { didYouMean, parse, parseDurationS } from '../args.ts';
import { loadPrivateKey, writeEnvelopeFile } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import type { Command, CliContext } from './types.ts';

export const SIGN_HELP = `usage: writ sign SCRIPT.js --key FILE --target node=ID|label=k=v [options]
       writ sign --add-signature ENVELOPE --key FILE [--out FILE]

Writes a signed job envelope (DSSE, payload type ${PAYLOAD_TYPES.job}). The script is compiled first as
the runner will compile it (QuickJS): a syntax error is reported with its line and column, nothing signed.

options:
  --key FILE          private key file (repeat to sign with several keys)
  --target SPEC       node=ID, or label=k=v (repeat labels to AND them)
  --args JSON|@FILE   the script's arguments (default: null)
  --caps a,b          capabilities the script needs (e.g. host.facts,vm.create)
  --ttl DURATION      how long the envelope stays valid (default 10m)
  --aud CLUSTER       the cluster id it is meant for (default $WRIT_CLUSTER or "writ-dev")
  --id ID             job id, the idempotency key (default: random)
  --timeout DURATION  script wall-clock limit (default 30s)
  --memory MIB        script memory limit in MiB (default 64)
  --nix-pin PATH      a /nix/store path the job may install (repeatable)
  --out FILE          write the envelope here (default: stdout); an existing file is refused
                      (ENVELOPE_FILE_EXISTS) so that a stale envelope is never submitted by mistake
  --force             overwrite --out
  --add-signature ENV co-sign an existing envelope with --key (k-of-n approvals)

example:
  writ sign scripts/examples/hello.js --key alice.key --target node=dev-1 --caps host.facts --out hello.env.json`;

export function parseTarget(specs: string[]): JobTarget {
  if (specs.length === 0) throw new WritError('USAGE', '--target is required: --target node=ID or --target label=key=value');
  const selector: Record<string, string> = {};
  let node: string | undefined;
  for (const s of specs) {
    const m = /^(node|label)=(.*)$/.exec(s);
    if (!m) throw new WritError('USAGE', `--target ${JSON.stringify(s)} must be node=ID or label=key=value`);
    if (m[1] === 'node') {
      if (!/^[a-z0-9][a-z0-9.-]{0,62}$/.test(m[2]!)) throw new WritError('USAGE', `--target node=${m[2]}: a node id is lowercase letters, digits, '.' and '-'`);
      node = m[2]!;
    } else {
      const kv = /^([a-z0-9][a-z0-9./_-]{0,62})=(.{0,63})$/.exec(m[2]!);
      if (!kv) throw new WritError('USAGE', `--target label=${m[2]}: expected label=key=value (key: lowercase letters, digits, ./_-)`);
      selector[kv[1]!] = kv[2]!;
    }
  }
  if (node && Object.keys(selector).length > 0) throw new WritError('USAGE', '--target takes either one node=ID or labels, not both');
  return node ? { node } : { selector };
}

export async function parseArgsValue(spec: string | undefined): Promise<JsonValue> {
  if (spec === undefined) return null;
  let text = spec;
  if (spec.startsWith('@')) {
    try {
      text = await readFile(spec.slice(1), 'utf8');
    } catch (e) {
      throw new WritError('USAGE', `--args ${spec}: cannot read ${spec.slice(1)} (${(e as NodeJS.ErrnoException).code})`);
    }
  }
  try {
    return parseStrictJson(text, { maxBytes: 512 * 1024 });
  } catch (e) {
    throw new WritError('USAGE', `--args is not valid JSON: ${(e as Error).message}`);
  }
}

/** Options shared by `writ sign` and `writ submit SCRIPT.js`. */
export const SIGN_OPTIONS = {
  key: { type: 'string', multiple: true },
  target: { type: 'string', multiple: true },
  args: { type: 'string' },
  caps: { type: 'string' },
  ttl: { type: 'string' },
  aud: { type: 'string' },
  id: { type: 'string' },
  timeout: { type: 'string' },
  memory: { type: 'string' },
  'nix-pin': { type: 'string', multiple: true },
} as const;

const OPTIONS = {
  ...SIGN_OPTIONS,
  out: { type: 'string' },
  force: { type: 'boolean', default: false },
  'add-signature': { type: 'string' },
} as const;

export interface SignedJob {
  envelope: string;
  jobId: string;
  keyids: string[];
}

/** Builds and signs a job envelope from CLI-style options (also used by `writ submit SCRIPT.js`). */
export async function signScriptFile(scriptPath: string, keys: KeyPair[], values: Record<string, unknown>, ctx: CliContext): Promise<SignedJob> {
  let source: string;
  try {
    source = await readFile(scriptPath, 'utf8');
  } catch (e) {
    throw new WritError('USAGE', `cannot read script ${scriptPath} (${(e as NodeJS.ErrnoException).code})`);
  }
  const caps =
    typeof values.caps === 'string'
      ? values.caps
          .split(',')
          .map((c) => c.trim())
          .filter(Boolean)
      : [];
  for (const c of caps) {
    if (!CAPABILITIES.has(c))
      throw new WritError('CAPABILITY_UNKNOWN', `--caps ${c} is not a capability${didYouMean(c, CAPABILITIES.keys())} (the list: docs/sal.md)`, {
        capability: c,
      });
  }
  // Compiled as the runner will: a script that does not parse is refused here, with its line and column.
  const problem = await checkScriptCompiles(source);
  if (problem) throw fromErrorJSON({ ...problem, message: `${scriptPath}: ${problem.message}` });
  const memory = values.memory === undefined ? undefined : Number(values.memory);
  if (memory !== undefined && (!Number.isInteger(memory) || memory < 1 || memory > 1024))
    throw new WritError('USAGE', '--memory must be a whole number of MiB from 1 to 1024');
  const payload = buildJobPayload({
    ...(typeof values.id === 'string' ? { id: values.id } : {}),
    source,
    args: await parseArgsValue(values.args as string | undefined),
    target: parseTarget((values.target as string[] | undefined) ?? []),
    caps,
    limits: {
      ...(values.timeout ? { timeoutMs: parseDurationS(String(values.timeout), '--timeout') * 1000 } : {}),
      ...(memory ? { memoryMiB: memory } : {}),
    },
    aud: (values.aud as string | undefined) ?? ctx.env.WRIT_CLUSTER ?? 'writ-dev',
    ttlS: values.ttl ? parseDurationS(String(values.ttl), '--ttl') : 600,
    nowS: ctx.now(),
    ...(Array.isArray(values['nix-pin']) ? { pins: { nix: values['nix-pin'] as string[] } } : {}),
  });
  // Validate exactly as every tier will before anything is signed.
  parseJobPayload(encodeJobPayload(payload));
  const env = signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(payload), keys);
  return { envelope: encodeEnvelope(env), jobId: payload.id, keyids: keys.map((k) => k.keyid) };
}

async function sign(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS, { min: 0, max: 1, usage: 'writ sign SCRIPT.js --key FILE --target node=ID' });
  if (values.help) return (io.out(SIGN_HELP), EXIT.ok);
  if (!values.key?.length) throw new WritError('USAGE', '--key FILE is required (create one with: writ keys generate --out FILE)');
  const keys = await Promise.all(values.key.map(loadPrivateKey));
  let envelope: string;
  let jobId: string | undefined;
  if (values['add-signature']) {
    if (positionals.length) throw new WritError('USAGE', '--add-signature takes an envelope, not a script');
    const file = values['add-signature'];
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new WritError('USAGE', `cannot read envelope ${file} (${(e as NodeJS.ErrnoException).code})`);
    }
    let env = parseEnvelope(text);
    for (const k of keys) env = addSignature(env, k);
    envelope = encodeEnvelope(env);
  } else {
    if (positionals.length !== 1) throw new WritError('USAGE', 'expected SCRIPT.js\nusage: writ sign SCRIPT.js --key FILE --target node=ID');
    const signed = await signScriptFile(positionals[0]!, keys, values, ctx);
    envelope = signed.envelope;
    jobId = signed.jobId;
  }
  if (values.out) {
    await writeEnvelopeFile(values.out, envelope + '\n', values.force === true || !!values['add-signature']);
    if (values.json) printJson(io, { ok: true, out: values.out, jobId, keyids: keys.map((k) => k.keyid) });
    else io.out(`wrote ${values.out}${jobId ? ` (job ${jobId})` : ''}, signed by ${keys.map((k) => k.keyid).join(', ')}`);
  } else if (values.json) {
    printJson(io, { ok: true, jobId, envelope: JSON.parse(envelope) });
  } else {
    io.out(envelope);
  }
  return EXIT.ok;
}

export const signCommand: Command = { name: 'sign', summary: 'sign a script into a job envelope', help: SIGN_HELP, run: sign };
