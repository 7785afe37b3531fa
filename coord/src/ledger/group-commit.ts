// Group commit: callers hand in one item each and wait; items that arrive while a group is being written
// go together into the next group, written by one call (one transaction). Each caller is answered only
// after its group's write resolved, and gets the error when it rejected: nothing is acknowledged early.

export interface GroupCommitOptions {
  /** Items per group at most. */
  maxItems: number;
  /** Groups written at once (1 keeps groups in order; PGlite serialises transactions anyway). */
  maxInFlight?: number;
}

interface Waiting<I, O> {
  item: I;
  resolve(out: O): void;
  reject(err: unknown): void;
}

export class GroupCommitter<I, O> {
  private waiting: Waiting<I, O>[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly writeGroup: (items: I[]) => Promise<O[]>,
    private readonly opts: GroupCommitOptions,
  ) {}

  /** Adds items to the next group; resolves with each one's outcome once its group was written. */
  add(items: readonly I[]): Promise<O[]> {
    const all = Promise.all(items.map((item) => new Promise<O>((resolve, reject) => this.waiting.push({ item, resolve, reject }))));
    this.kick();
    return all;
  }

  private kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // Let the requests of this tick join the group.
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.waiting.length > 0 && this.inFlight < (this.opts.maxInFlight ?? 1)) {
      const group = this.waiting.splice(0, this.opts.maxItems);
      this.inFlight++;
      this.writeGroup(group.map((w) => w.item))
        .then(
          (outs) => group.forEach((w, i) => w.resolve(outs[i]!)),
          (err: unknown) => group.forEach((w) => w.reject(err)),
        )
        .finally(() => {
          this.inFlight--;
          this.pump();
        });
    }
  }
}
