// A small async reader/writer lock. Readers share; a writer waits for current readers and
// excludes everyone; waiting writers block new readers (no writer starvation).

export class RwLock {
  #readers = 0;
  #writer = false;
  #queue: { exclusive: boolean; resolve: () => void }[] = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire(false);
    try {
      return await fn();
    } finally {
      this.#readers--;
      this.#drain();
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire(true);
    try {
      return await fn();
    } finally {
      this.#writer = false;
      this.#drain();
    }
  }

  #canGrant(exclusive: boolean): boolean {
    return exclusive ? !this.#writer && this.#readers === 0 : !this.#writer;
  }

  #acquire(exclusive: boolean): Promise<void> {
    if (this.#queue.length === 0 && this.#canGrant(exclusive)) {
      this.#grant(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#queue.push({ exclusive, resolve }));
  }

  #grant(exclusive: boolean): void {
    if (exclusive) this.#writer = true;
    else this.#readers++;
  }

  #drain(): void {
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!;
      if (!this.#canGrant(next.exclusive)) return;
      this.#queue.shift();
      this.#grant(next.exclusive);
      next.resolve();
      if (next.exclusive) return;
    }
  }
}
