// A minimal QMP client: one connection per use (QMP serves one client at a time), capabilities
// negotiated on connect, commands answered in order, events kept for `waitEvent`.
import net from 'node:net';
import { WritError } from '@writ/protocol';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  command: string;
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

export class QmpClient {
  private buffer = '';
  private readonly pending: Pending[] = [];
  private readonly events: QmpEvent[] = [];
  private readonly eventWaiters: { name: string; resolve: (e: QmpEvent) => void }[] = [];
  private greeted: ((v: unknown) => void) | null = null;
  private closedError: Error | null = null;

  private constructor(
    private readonly socket: net.Socket,
    private readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new Error('QMP connection closed')));
  }

  static async connect(socketPath: string, timeoutMs: number): Promise<QmpClient> {
    const socket = net.createConnection({ path: socketPath });
    const client = new QmpClient(socket, socketPath, timeoutMs);
    await client
      .withTimeout(
        new Promise((resolve, reject) => {
          client.greeted = resolve;
          socket.once('error', reject);
        }),
        'greeting',
      )
      .catch((e: unknown) => {
        socket.destroy();
        throw e instanceof WritError
          ? e
          : new WritError('HYPERVISOR_UNREACHABLE', `QMP socket ${socketPath} did not answer: ${(e as Error).message}`, {
              socket: socketPath,
              errno: (e as NodeJS.ErrnoException).code ?? null,
            });
      });
    await client.execute('qmp_capabilities');
    return client;
  }

  /** Runs one command; a QMP `error` answer is HYPERVISOR_API_ERROR with its class and description. */
  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) throw this.unreachable(command, this.closedError);
    const line = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n';
    const answer = new Promise<unknown>((resolve, reject) => this.pending.push({ resolve, reject, command }));
    this.socket.write(line);
    return (await this.withTimeout(answer, command)) as T;
  }

  /** Resolves with the first event of that name seen on this connection (including ones already seen). */
  async waitEvent(name: string, timeoutMs: number): Promise<QmpEvent | null> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) return seen;
    return new Promise((resolve) => {
      const waiter = { name, resolve: (e: QmpEvent) => resolve(e) };
      this.eventWaiters.push(waiter);
      setTimeout(() => {
        const i = this.eventWaiters.indexOf(waiter);
        if (i >= 0) this.eventWaiters.splice(i, 1);
        resolve(null);
      }, timeoutMs);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line === '') continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted?.(msg);
        this.greeted = null;
      } else if ('event' in msg) {
        const ev = msg as unknown as QmpEvent;
        this.events.push(ev);
        for (const w of this.eventWaiters.filter((x) => x.name === ev.event)) {
          this.eventWaiters.splice(this.eventWaiters.indexOf(w), 1);
          w.resolve(ev);
        }
      } else if ('return' in msg || 'error' in msg) {
        const p = this.pending.shift();
        if (!p) continue;
        if ('error' in msg) {
          const err = msg.error as { class?: string; desc?: string };
          p.reject(
            new WritError('HYPERVISOR_API_ERROR', `QMP ${p.command} failed: ${err.desc ?? 'unknown error'}`, {
              command: p.command,
              class: err.class ?? null,
              messages: [err.desc ?? ''],
            }),
          );
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const p of this.pending.splice(0)) p.reject(this.unreachable(p.command, e));
  }

  private unreachable(command: string, e: Error): WritError {
    return new WritError('HYPERVISOR_UNREACHABLE', `QMP ${command} on ${this.socketPath} got no answer: ${e.message}`, { socket: this.socketPath, command });
  }

  private async withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new WritError('HYPERVISOR_UNREACHABLE', `QMP ${what} on ${this.socketPath} got no answer within ${this.timeoutMs} ms`, {
              socket: this.socketPath,
              command: what,
            }),
          ),
        this.timeoutMs,
      );
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Opens a connection, runs `fn`, always closes. */
export async function withQmp<T>(socketPath: string, timeoutMs: number, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connect(socketPath, timeoutMs);
  try {
    return await fn(qmp);
  } finally {
    qmp.close();
  }
}
