// qemu-img's -p progress line (util/qemu-progress.c): "    (NN.NN/100%)\r" on stdout each time
// the percentage moved by more than `minSkip`, a newline at the end. The arithmetic is C float
// (32-bit), reproduced with Math.fround so the same steps print the same figures.
import { printfFixed } from '../../core/index.js';
import type { OutputStream } from '../io.js';

const f = Math.fround;

export class QemuProgress {
  readonly #out: OutputStream;
  readonly #enabled: boolean;
  readonly #minSkip: number;
  #current = 0;
  #lastPrint = 0;

  /** qemu_progress_init(enabled, min_skip). */
  constructor(out: OutputStream, enabled: boolean, minSkip: number) {
    this.#out = out;
    this.#enabled = enabled;
    this.#minSkip = f(minSkip);
  }

  /** qemu_progress_print(delta, max): advance by delta% of max (max 0: set to delta). */
  print(delta: number, max: number): void {
    let current = max === 0 ? f(delta) : f(this.#current + f(f(f(delta) / 100) * max));
    if (current > 100) current = 100;
    this.#current = current;
    if (
      current > f(this.#lastPrint + this.#minSkip) ||
      current < f(this.#lastPrint - this.#minSkip) ||
      current === 100 ||
      current === 0
    ) {
      this.#lastPrint = current;
      if (this.#enabled) this.#out.write(`    (${printfFixed(current, 2)}/100%)\r`);
    }
  }

  /** Account for `bytes` of `total` the way img_compare does: ((float) bytes / total) * 100. */
  advance(bytes: number, total: number): void {
    this.print(f(f(f(bytes) / f(total)) * 100), 100);
  }

  /** qemu_progress_end(). */
  end(): void {
    if (this.#enabled) this.#out.write('\n');
  }
}
