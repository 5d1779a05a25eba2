// qemu-img's -p output for commands that report through util/qemu-progress.c (amend, compare): float
// (single precision) arithmetic, a redraw only after at least 1% of progress and at 0% and
// 100%, "    (%3.2f/100%)\r" per redraw and a newline at the end.
import { printfFixed } from '../../core/index.js';
import type { CliIO } from '../io.js';
import type { ProgressReporter } from './progress.js';

export class QemuProgress {
  #current = 0;
  #lastPrint = 0;
  readonly #minSkip: number;
  readonly #io: CliIO | undefined;
  readonly #other: ProgressReporter | undefined;

  /**
   * `io` undefined: no qemu text (qemu_progress_init(false, ...)); `other` receives every value
   * instead (the terminal bar or JSON lines of progress.ts).
   */
  constructor(io: CliIO | undefined, minSkip = 1.0, other?: ProgressReporter) {
    this.#io = io;
    this.#minSkip = Math.fround(minSkip);
    this.#other = other;
  }

  /** qemu_progress_print(delta, max). */
  print(delta: number, max: number): void {
    const f = Math.fround;
    let current = max === 0 ? f(delta) : f(this.#current + f(f(delta / 100) * max));
    if (current > 100) current = 100;
    this.#current = current;
    this.#other?.update(current);
    if (
      current > f(this.#lastPrint + this.#minSkip) ||
      current < f(this.#lastPrint - this.#minSkip) ||
      current === 100 ||
      current === 0
    ) {
      this.#lastPrint = current;
      this.#io?.stdout.write(`    (${printfFixed(current, 2)}/100%)\r`);
    }
  }

  /** amend_status_cb(): qemu_progress_print(100.f * offset / total_work_size, 0). */
  status(offset: number, total: number): void {
    const f = Math.fround;
    this.print(f(f(100 * f(offset)) / f(total)), 0);
  }

  /** img_compare's progress: qemu_progress_print(((float) bytes / total) * 100, 100). */
  advance(bytes: number, total: number): void {
    const f = Math.fround;
    this.print(f(f(f(bytes) / f(total)) * 100), 100);
  }

  /** qemu_progress_end(). */
  end(): void {
    this.#io?.stdout.write('\n');
    this.#other?.end();
  }
}
