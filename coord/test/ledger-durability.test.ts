// R1 at the ledger: a job whose insertJob() has resolved survives the coord being killed (SIGKILL) right
// after; the PGlite folder reopens after the crash (taking over the dead process's lock) with its audit
// chain intact. Runs on a PGlite folder and on a throwaway PostgreSQL server.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { openLedger, type LedgerOptions } from '../src/ledger/index.ts';
import { startTestPostgres } from '../../tests/helpers/postgres.ts';

const RUN = randomBytes(2).toString('hex');
const LEDGER_MODULE = pathToFileURL(fileURLToPath(new URL('../src/ledger/index.ts', import.meta.url))).href;
const tempDirs: string[] = [];

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`[ledger durability] PostgreSQL variant skipped: ${postgres.reason}`);

afterAll(async () => {
  if (postgres.ok) await postgres.pg.stop();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

// The child writes jobs as fast as it can and prints each id only after insertJob() resolved,
// i.e. at the moment the coord would acknowledge the client.
const CHILD = `
import { sha256Hex } from '@writ/protocol';
// stdout is a non-blocking pipe: writeSync fails with EAGAIN when a loaded parent reads slowly, so each
// line is written and its write awaited (the ack still follows the commit it reports).
const say = (line) => new Promise((resolve, reject) => process.stdout.write(line, (e) => (e ? reject(e) : resolve())));
const { openLedger } = await import(process.env.LEDGER_MODULE);
const ledger = await openLedger(JSON.parse(process.env.LEDGER_OPTIONS));
await ledger.appendAudit({ kind: 'test.start', actor: 'child', subject: process.env.PREFIX });
await say('ready\\n');
for (let i = 0; ; i++) {
  const id = process.env.PREFIX + '-' + i;
  const envelope = JSON.stringify({ id });
  await ledger.insertJob({ id, envelope, envelopeSha256: sha256Hex(envelope), signerKeyids: ['k'], target: { node: 'n1' }, caps: [], exp: new Date(Date.now() + 3600000) });
  await ledger.appendAudit({ kind: 'job.admit', actor: 'k', subject: id });
  await say('acked ' + id + '\\n');
}
`;

async function killAfterAcks(opts: LedgerOptions, prefix: string, acks: number): Promise<{ acked: string[]; ms: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, LEDGER_MODULE, LEDGER_OPTIONS: JSON.stringify(opts), PREFIX: prefix },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const acked: string[] = [];
  let started = 0;
  let ms = 0;
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not ack ${acks} jobs in time; stderr:\n${stderr}`));
    }, 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'ready') started = performance.now();
        if (line.startsWith('acked ')) acked.push(line.slice(6));
        if (acked.length === acks && child.exitCode === null) {
          ms = performance.now() - started;
          child.kill('SIGKILL');
        }
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`child exited with ${code}; stderr:\n${stderr}`));
    });
  });
  return { acked, ms };
}

const ENGINES: { name: string; skip?: string; options: () => Promise<LedgerOptions> }[] = [
  {
    name: 'PGlite in a data folder',
    options: async () => {
      const dataDir = mkdtempSync(join(tmpdir(), `writ-ledger-kill-${RUN}-`));
      tempDirs.push(dataDir);
      return { dataDir };
    },
  },
  {
    name: 'PostgreSQL',
    ...(postgres.ok ? {} : { skip: postgres.reason }),
    options: async () => {
      if (!postgres.ok) throw new Error(postgres.reason);
      return { databaseUrl: await postgres.pg.freshDatabaseUrl() };
    },
  },
];

describe.each(ENGINES)('ledger durability on $name', (engine) => {
  it('keeps every acknowledged job after the writer is SIGKILLed, and the audit chain still verifies', async (ctx) => {
    if (engine.skip) {
      console.warn(`[ledger durability] skipped on ${engine.name}: ${engine.skip}`);
      ctx.skip();
    }
    const opts = await engine.options();
    const prefix = `kill-${RUN}`;
    const { acked, ms } = await killAfterAcks(opts, prefix, 60);
    console.info(`[ledger durability] ${engine.name}: 60 acknowledged insertJob+appendAudit pairs in ${ms.toFixed(0)} ms (${(ms / 60).toFixed(2)} ms each)`);
    expect(acked.length).toBeGreaterThanOrEqual(60);

    const reopenStarted = performance.now();
    const ledger = await openLedger(opts);
    console.info(`[ledger durability] ${engine.name}: reopened after SIGKILL in ${(performance.now() - reopenStarted).toFixed(0)} ms`);
    try {
      for (const id of acked) expect(await ledger.getJob(id), id).toMatchObject({ id, status: 'admitted' });
      const v = await ledger.verifyAudit();
      expect(v.ok).toBe(true);
      // One start entry and one per acknowledged job at least (a job inserted but not yet acknowledged may add one more).
      expect(v.count).toBeGreaterThanOrEqual(acked.length + 1);
      // Still writable after the crash: the chain continues from where the killed writer left it.
      const next = await ledger.appendAudit({ kind: 'test.after', actor: 'parent', subject: prefix });
      expect(next.seq).toBe(v.count + 1);
      expect((await ledger.verifyAudit()).ok).toBe(true);
    } finally {
      await ledger.close();
    }
    // A child with tsx and PGlite takes ~25 s here on a quiet machine: give a loaded one room.
  }, 120_000);
});
