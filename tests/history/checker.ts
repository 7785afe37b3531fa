// The history checker (R8): from what the harness recorded (every submission and its answer, the job
// statuses it saw over time, the faults and when they were injected), the ledger's final view of each job,
// the node journals and the network namespaces that exist, it counts
//   lost        a submission answered 2xx whose job is not `succeeded` in the ledger at the end;
//   duplicated  an effect step applied more than once: two journal `done` records with created:true for the
//               same (job, step), two `start` records of one attempt, or an intent/done written by an
//               execution after a newer attempt of the job started (in the journal's order);
//   unexpected  a terminal status that later changed, a result other than the script's expected one, an
//               effect (namespace or journal) with no ledger job, or a succeeded job whose effects are missing;
// and the recovery time after each fault: from the fault to the first job reaching a terminal state after it.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export interface Submission {
  id: string;
  tag: string;
  steps: number;
  expected: string;
  /** Time of the 2xx answer, or null when it was never accepted. */
  acceptedAt: number | null;
  lastAnswer: string;
}

export interface FaultRecord {
  kind: string;
  at: number;
  restoredAt: number | null;
  note?: string;
}

export interface LedgerJob {
  id: string;
  status: string;
  result: unknown;
  finishedAt: string | null;
  attempts?: number;
  error?: { code: string; message: string } | null;
  attemptHistory?: { attempt: number; node: string; outcome: string; errorCode: string | null; startedAt: string | null; finishedAt: string | null }[];
}

export interface JournalRec {
  t: 'start' | 'intent' | 'done' | 'failed' | 'end';
  attempt: number;
  exec: string;
  step?: number;
  op?: string;
  result?: unknown;
  ts: number;
}

export interface HistoryInput {
  submissions: Submission[];
  /** Statuses seen for each job, in the order seen (consecutive repeats dropped). */
  observed: Map<string, string[]>;
  /** The ledger at the end; a job missing here is absent from the ledger (404). */
  ledger: Map<string, LedgerJob>;
  /** Every journal file under the runners' state dirs: job id → its records, by node. */
  journals: Map<string, { node: string; records: JournalRec[] }[]>;
  /** Namespaces with this run's prefix that exist at the end. */
  netns: string[];
  /** Namespace name → the job whose step made it (from the names the harness gave its jobs). */
  netnsOwner: (name: string) => { jobId: string; step: number } | null;
  faults: FaultRecord[];
}

export interface Finding {
  count: 'lost' | 'duplicated' | 'unexpected';
  jobId: string | null;
  what: string;
}

export interface HistoryReport {
  lost: number;
  duplicated: number;
  unexpected: number;
  accepted: number;
  neverAccepted: number;
  findings: Finding[];
  recoveries: { kind: string; at: number; recoveryMs: number | null }[];
  summary: string;
}

const TERMINAL = new Set(['succeeded', 'failed', 'refused']);

/** Reads `<stateDir>/journal/*.jsonl` of each node; a torn last line is ignored, as the runner does. */
export async function readJournals(stateDirs: Record<string, string>): Promise<Map<string, { node: string; records: JournalRec[] }[]>> {
  const out = new Map<string, { node: string; records: JournalRec[] }[]>();
  for (const [node, dir] of Object.entries(stateDirs)) {
    const jdir = path.join(dir, 'journal');
    for (const name of await readdir(jdir).catch(() => [] as string[])) {
      if (!name.endsWith('.jsonl')) continue;
      const lines = (await readFile(path.join(jdir, name), 'utf8')).split('\n');
      lines.pop();
      const records: JournalRec[] = [];
      for (const l of lines) {
        try {
          records.push(JSON.parse(l) as JournalRec);
        } catch {
          /* counted below as an unreadable record */
          records.push({ t: 'failed', attempt: -1, exec: 'corrupt', ts: 0 });
        }
      }
      const id = name.slice(0, -'.jsonl'.length);
      out.set(id, [...(out.get(id) ?? []), { node, records }]);
    }
  }
  return out;
}

export function checkHistory(h: HistoryInput): HistoryReport {
  const findings: Finding[] = [];
  const add = (count: Finding['count'], jobId: string | null, what: string) => findings.push({ count, jobId, what });
  const byId = new Map(h.submissions.map((s) => [s.id, s]));

  for (const s of h.submissions) {
    const job = h.ledger.get(s.id);
    if (s.acceptedAt !== null && job?.status !== 'succeeded') {
      add(
        'lost',
        s.id,
        `accepted at ${new Date(s.acceptedAt).toISOString()} but ${job ? `${job.status} in the ledger (attempts ${job.attempts ?? '?'}${job.error ? `, ${job.error.code}: ${job.error.message}` : ''})` : 'absent from the ledger'}`,
      );
    }
    if (job?.status === 'succeeded' && JSON.stringify(job.result) !== JSON.stringify(s.expected)) {
      add('unexpected', s.id, `result ${JSON.stringify(job.result)}, expected ${JSON.stringify(s.expected)}`);
    }
    const seen = h.observed.get(s.id) ?? [];
    const firstTerminal = seen.findIndex((st) => TERMINAL.has(st));
    if (firstTerminal >= 0 && seen.slice(firstTerminal).some((st) => st !== seen[firstTerminal])) {
      add('unexpected', s.id, `terminal status changed: ${seen.join(' → ')}`);
    } else if (job && firstTerminal >= 0 && job.status !== seen[firstTerminal]) {
      add('unexpected', s.id, `terminal status ${seen[firstTerminal]} seen during the run, ${job.status} at the end`);
    }
    if (job?.status === 'succeeded') {
      const recs = (h.journals.get(s.id) ?? []).flatMap((j) => j.records);
      for (let step = 1; step <= s.steps; step++) {
        const name = h.netns.find((n) => h.netnsOwner(n)?.jobId === s.id && h.netnsOwner(n)?.step === step);
        // The journal numbers every host call; an effect step is found by the namespace its result names.
        const done = recs.some(
          (r) =>
            r.t === 'done' &&
            r.op === 'net.netns.ensure' &&
            (r.result as { name?: string } | null)?.name !== undefined &&
            h.netnsOwner((r.result as { name: string }).name)?.jobId === s.id &&
            h.netnsOwner((r.result as { name: string }).name)?.step === step,
        );
        if (!done || !name)
          add(
            'unexpected',
            s.id,
            `succeeded but step ${step} has ${done ? '' : 'no journal done record'}${!done && !name ? ' and ' : ''}${name ? '' : 'no namespace'}`,
          );
      }
    }
  }

  for (const [jobId, files] of h.journals) {
    if (!byId.has(jobId) || !h.ledger.has(jobId)) {
      if (files.some((f) => f.records.some((r) => r.t === 'intent' || r.t === 'done')))
        add('unexpected', jobId, 'effect records in a journal for a job the ledger does not have');
    }
    for (const { node, records } of files) {
      if (records.some((r) => r.exec === 'corrupt')) add('unexpected', jobId, `unreadable journal record on ${node}`);
      const created = new Map<number, number>();
      const starts = new Map<number, number>();
      let newest = 0;
      for (const r of records) {
        if (r.t === 'start') {
          starts.set(r.attempt, (starts.get(r.attempt) ?? 0) + 1);
          if (starts.get(r.attempt) === 2) add('duplicated', jobId, `attempt ${r.attempt} started twice on ${node}`);
          newest = Math.max(newest, r.attempt);
        } else if ((r.t === 'intent' || r.t === 'done') && r.attempt < newest) {
          add('duplicated', jobId, `${r.t} of step ${r.step} (${r.op}) by attempt ${r.attempt} (exec ${r.exec}) on ${node} after attempt ${newest} started`);
        }
        if (r.t === 'done' && (r.result as { created?: boolean } | null)?.created === true) {
          const n = (created.get(r.step!) ?? 0) + 1;
          created.set(r.step!, n);
          if (n === 2) add('duplicated', jobId, `step ${r.step} (${r.op}) applied twice (two done records with created:true) on ${node}`);
        }
      }
    }
  }

  for (const name of h.netns) {
    const owner = h.netnsOwner(name);
    if (!owner || !h.ledger.has(owner.jobId)) add('unexpected', owner?.jobId ?? null, `namespace ${name} exists with no ledger job`);
  }

  const finishes = [...h.ledger.values()]
    .map((j) => (j.finishedAt ? Date.parse(j.finishedAt) : NaN))
    .filter((t) => Number.isFinite(t))
    .sort((a, b) => a - b);
  const recoveries = h.faults.map((f) => {
    const next = finishes.find((t) => t > f.at);
    return { kind: f.kind, at: f.at, recoveryMs: next === undefined ? null : next - f.at };
  });
  const count = (c: Finding['count']) => findings.filter((f) => f.count === c).length;
  const r = { lost: count('lost'), duplicated: count('duplicated'), unexpected: count('unexpected') };
  const accepted = h.submissions.filter((s) => s.acceptedAt !== null).length;
  return {
    ...r,
    accepted,
    neverAccepted: h.submissions.length - accepted,
    findings,
    recoveries,
    summary: `lost=${r.lost} duplicated=${r.duplicated} unexpected=${r.unexpected}`,
  };
}

/** The report as lines for a terminal: the counts, the recovery after each fault, then every finding. */
export function formatReport(r: HistoryReport): string[] {
  return [
    r.summary,
    `submitted=${r.accepted + r.neverAccepted} accepted=${r.accepted} never-accepted=${r.neverAccepted}`,
    ...r.recoveries.map(
      (x) => `recovery ${x.kind} at ${new Date(x.at).toISOString()}: ${x.recoveryMs === null ? 'no job finished after it' : `${x.recoveryMs} ms`}`,
    ),
    ...r.findings.map((f) => `${f.count}: job ${f.jobId ?? '-'}: ${f.what}`),
  ];
}
