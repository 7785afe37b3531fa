// writ submit ENVELOPE|SCRIPT [--key FILE] [--wait] [--follow]
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { WritError } from '@writ/protocol';
import { parse } from '../args.ts';
import { api, followEvents, resolveCoord, type CoordTarget, type StreamedEvent } from '../client.ts';
import { keyringDir, loadPrivateKey } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { SIGN_OPTIONS, signScriptFile } from './sign.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ submit ENVELOPE.json|SCRIPT.js [--key FILE] [--target ...] [--caps ...] [--wait|--follow] [--coord URL] [--json]

Submits a signed envelope to the coord. Given a .js script instead, signs it first (same options as
\`writ sign\`; --key defaults to $WRIT_HOME/keys/admin.key, which \`writ dev\` creates).

  --wait      wait until the job ends; exit 0 if it succeeded, 1 otherwise
  --follow    stream the job's log lines and status changes until it ends (implies --wait)
  --coord URL the coord (default $WRIT_COORD, or the one \`writ dev --keep\` recorded)

example:
  writ submit scripts/examples/hello.js --target node=dev-1 --caps host.facts --follow`;

const OPTIONS = {
  ...SIGN_OPTIONS,
  wait: { type: 'boolean', default: false },
  follow: { type: 'boolean', default: false },
  coord: { type: 'string' },
} as const;

interface JobView {
  id: string;
  status: string;
  node: string | null;
  attempts: number;
  result: unknown;
  error: { code: string; message: string } | null;
}

export function printEvent(io: Io, e: StreamedEvent): void {
  const d = e.data;
  if (d.type === 'log') io.out(`[${(d.level ?? 'info').padEnd(5)}] ${d.message}`);
  else io.out(`[${d.type.padEnd(5)}] ${d.message}`);
}

export async function waitForJob(coord: CoordTarget, id: string, follow: boolean, io: Io, json: boolean): Promise<JobView> {
  if (follow) {
    await followEvents(coord, id, (e) => (json ? io.out(JSON.stringify(e.data)) : printEvent(io, e)));
  } else {
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      const j = (await api<JobView>(coord, 'GET', `/v1/jobs/${encodeURIComponent(id)}`)).body;
      if (['succeeded', 'failed', 'refused'].includes(j.status)) return j;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  return (await api<JobView>(coord, 'GET', `/v1/jobs/${encodeURIComponent(id)}`)).body;
}

async function submit(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS, { min: 1, max: 1, usage: 'writ submit ENVELOPE.json|SCRIPT.js [--follow]' });
  if (values.help) return io.out(HELP), EXIT.ok;
  const file = positionals[0]!;
  let envelope: string;
  if (file.endsWith('.js') || file.endsWith('.mjs')) {
    const keyFiles = values.key?.length ? values.key : [path.join(keyringDir(ctx.env), 'admin.key')];
    const keys = await Promise.all(keyFiles.map(loadPrivateKey));
    envelope = (await signScriptFile(file, keys, values, ctx)).envelope;
  } else {
    try {
      envelope = (await readFile(file, 'utf8')).trim();
    } catch (e) {
      throw new WritError('USAGE', `cannot read ${file} (${(e as NodeJS.ErrnoException).code})`);
    }
  }
  const coord = await resolveCoord(values.coord, ctx.env);
  const accepted = (await api<{ id: string; status: string; node: string | null; replayed: boolean }>(coord, 'POST', '/v1/jobs', envelope)).body;
  if (!values.json) io.out(`job ${accepted.id} ${accepted.replayed ? 'was already recorded' : 'accepted'}: ${accepted.status}${accepted.node ? ` on ${accepted.node}` : ''}`);
  if (!values.wait && !values.follow) {
    if (values.json) printJson(io, { ok: true, ...accepted });
    return EXIT.ok;
  }
  const job = await waitForJob(coord, accepted.id, values.follow === true, io, values.json === true);
  if (values.json) printJson(io, { ok: job.status === 'succeeded', job });
  else if (job.status === 'succeeded') io.out(`job ${job.id} succeeded (attempts: ${job.attempts})\nresult: ${JSON.stringify(job.result, null, 2)}`);
  else io.err(`writ: job ${job.id} ${job.status}: ${job.error ? `${job.error.code}: ${job.error.message}` : 'no reason recorded'}`);
  return job.status === 'succeeded' ? EXIT.ok : EXIT.failure;
}

export const submitCommand: Command = { name: 'submit', summary: 'submit a signed envelope (or sign and submit a script)', help: HELP, run: submit };
