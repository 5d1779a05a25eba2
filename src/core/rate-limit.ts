// Rate limits for qemu-img's -r (convert: a write throttle on the target, set_rate_limit() with
// THROTTLE_BPS_WRITE; commit: the block job's speed). Both come down to a leaky bucket as in
// util/throttle.c: the bucket drains at `bytesPerSecond`, a request may start while the level
// is at most one tenth of a second's worth (throttle_fix_bucket's default burst), and adds its
// size when it does.

import { setTimeout as sleep } from 'node:timers/promises';
import { throwIfAborted } from './errors.js';

export class LeakyBucket {
  readonly bytesPerSecond: number;
  readonly #max: number;
  #level = 0;
  #last = performance.now();

  constructor(bytesPerSecond: number) {
    if (!(bytesPerSecond > 0)) throw new RangeError('the rate limit must be positive');
    this.bytesPerSecond = bytesPerSecond;
    this.#max = bytesPerSecond / 10;
  }

  #leak(): void {
    const now = performance.now();
    this.#level = Math.max(0, this.#level - ((now - this.#last) / 1000) * this.bytesPerSecond);
    this.#last = now;
  }

  /** Wait until `bytes` may go (throttle_compute_wait), then account for them. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    this.#leak();
    while (this.#level > this.#max) {
      const ms = ((this.#level - this.#max) / this.bytesPerSecond) * 1000;
      await sleep(Math.max(1, Math.ceil(ms)), undefined, signal ? { signal } : {}).catch(() =>
        throwIfAborted(signal),
      );
      throwIfAborted(signal);
      this.#leak();
    }
    this.#level += bytes;
  }
}
