/**
 * Per-repository readers-writer locks in this process: writes into a repository (uploads, manifest and tag PUTs)
 * hold it shared, a repository delete holds it exclusively. A push that starts while a delete runs waits for it and
 * then lands entirely after it; a delete waits for the writes already running.
 *
 * Across processes the delete itself is ordered so that a racing push fails cleanly instead (see
 * `deleteRepositoryContent`).
 */
export class RepositoryLocks {
  private readonly locks = new Map<string, { readers: number; writer: boolean; waiting: { exclusive: boolean; go: () => void }[] }>();

  private state(name: string) {
    let s = this.locks.get(name);
    if (!s) {
      s = { readers: 0, writer: false, waiting: [] };
      this.locks.set(name, s);
    }
    return s;
  }

  private wake(name: string): void {
    const s = this.locks.get(name);
    if (!s) return;
    while (s.waiting.length > 0 && !s.writer) {
      const next = s.waiting[0] as { exclusive: boolean; go: () => void };
      if (next.exclusive) {
        if (s.readers > 0) break;
        s.waiting.shift();
        s.writer = true;
        next.go();
        break;
      }
      s.waiting.shift();
      s.readers++;
      next.go();
    }
    if (s.readers === 0 && !s.writer && s.waiting.length === 0) this.locks.delete(name);
  }

  private async acquire(name: string, exclusive: boolean): Promise<void> {
    const s = this.state(name);
    // Writers waiting go first: a stream of pushes cannot starve a delete.
    const free = exclusive ? !s.writer && s.readers === 0 && s.waiting.length === 0 : !s.writer && s.waiting.length === 0;
    if (free) {
      if (exclusive) s.writer = true;
      else s.readers++;
      return;
    }
    await new Promise<void>((go) => s.waiting.push({ exclusive, go }));
  }

  /** Runs `fn` holding the repository's lock shared (a write into it). */
  async shared<T>(name: string, fn: () => Promise<T>): Promise<T> {
    await this.acquire(name, false);
    try {
      return await fn();
    } finally {
      const s = this.state(name);
      s.readers--;
      this.wake(name);
    }
  }

  /** Runs `fn` holding the repository's lock exclusively (a repository delete). */
  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    await this.acquire(name, true);
    try {
      return await fn();
    } finally {
      const s = this.state(name);
      s.writer = false;
      this.wake(name);
    }
  }
}
