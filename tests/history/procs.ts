// Service processes for the history check: each is started again and again under one name (faults kill,
// pause and restart it), is ready at its `{"ready":true}` line, and is restarted by a watchdog when it exits
// without the schedule having asked for it (that is how a production supervisor of processes behaves, and
// what the ledger-disk fault relies on).
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';

export interface ServiceSpec {
  name: string;
  /** Where its stderr goes as well (appended, across restarts). */
  logFile?: string;
  /** argv[0] is the script node runs. */
  argv: () => string[];
  env: () => NodeJS.ProcessEnv;
}

export type Log = (line: string) => void;

export class Service {
  child: ChildProcess | null = null;
  ready: Record<string, unknown> = {};
  /** Unplanned exits seen (each restarted by the watchdog). */
  readonly unplannedExits: { at: number; code: number | null; signal: string | null; stderr: string }[] = [];
  private planned = false;
  private stopped = false;
  private err = '';
  private restarting: Promise<void> | null = null;

  constructor(
    readonly spec: ServiceSpec,
    private readonly log: Log,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  stderrTail(): string {
    return this.err.slice(-3000);
  }

  /** Starts the process; resolves at its ready line, rejects when it exits first. */
  start(timeoutMs = 60_000): Promise<void> {
    this.planned = false;
    const child = spawn(process.execPath, this.spec.argv(), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WRIT_LOG_LEVEL: 'warn', ...this.spec.env() },
    });
    this.child = child;
    this.err = '';
    child.stderr!.on('data', (d) => {
      this.err = (this.err + String(d)).slice(-20_000);
      if (this.spec.logFile) appendFileSync(this.spec.logFile, String(d));
    });
    if (this.spec.logFile)
      appendFileSync(this.spec.logFile, `--- ${new Date().toISOString()} start pid ${child.pid} ${this.spec.argv().slice(1, 2).join(' ')}\n`);
    let out = '';
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.spec.name} not ready within ${timeoutMs} ms: ${this.stderrTail()}`)), timeoutMs);
      child.stdout!.on('data', (d) => {
        out += String(d);
        const line = out.split('\n').find((l) => l.includes('"ready":true'));
        if (line) {
          clearTimeout(timer);
          this.ready = JSON.parse(line) as Record<string, unknown>;
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.spec.name} exited before it was ready (${code ?? signal}): ${this.stderrTail()}`));
      });
    });
    child.once('exit', (code, signal) => {
      if (this.child !== child || this.planned || this.stopped) return;
      this.unplannedExits.push({ at: Date.now(), code, signal, stderr: this.stderrTail() });
      this.log(`${this.spec.name} exited unplanned (${code ?? signal}); restarting it`);
      void this.restartLoop();
    });
    return ready;
  }

  /** Keeps trying to start the process (1 s apart) until it is ready or the service is stopped. */
  private restartLoop(): Promise<void> {
    if (this.restarting) return this.restarting;
    this.restarting = (async () => {
      while (!this.stopped) {
        await new Promise((r) => setTimeout(r, 1000));
        if (this.stopped) break;
        try {
          await this.start();
          break;
        } catch (e) {
          this.log(`${this.spec.name} restart failed: ${(e as Error).message.slice(0, 300)}`);
        }
      }
    })().finally(() => (this.restarting = null));
    return this.restarting;
  }

  /** Waits until a watchdog restart (if any) is over. */
  async settled(): Promise<void> {
    while (this.restarting) await this.restarting;
  }

  /** Sends `sig` and, for a killing signal, waits for the exit. Planned: the watchdog leaves it down. */
  async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    if (sig === 'SIGSTOP' || sig === 'SIGCONT') {
      child.kill(sig);
      return;
    }
    this.planned = true;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(sig);
    const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  }

  /** For cleanup: SIGKILL and never restart. */
  async stop(): Promise<void> {
    this.stopped = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await exited;
  }
}
