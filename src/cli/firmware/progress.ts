// Progress for long firmware commands: an ora spinner on a TTY, plain phase lines on stderr
// when -p/--progress asks on a non-TTY, nothing otherwise. The library only emits events.

import ora, { type Ora } from 'ora';
import { formatSize } from '../../core/index.js';
import type { CliIO } from '../io.js';

export interface ProgressSink {
  update(text: string): void;
  succeed(text?: string): void;
  fail(): void;
}

const silent: ProgressSink = { update() {}, succeed() {}, fail() {} };

export function progressSink(io: CliIO, forced: boolean): ProgressSink {
  // A spinner needs a real terminal with a width: ora divides by `columns` to know how many
  // lines to clear, and a pseudo-terminal of width 0 (script(1) without a parent terminal)
  // would make it loop forever.
  const tty =
    io.stderr.isTTY === true && (io.stderr.columns ?? 0) > 0 && io.env['CI'] === undefined;
  if (tty) {
    const spinner: Ora = ora({
      stream: io.stderr as unknown as NodeJS.WritableStream,
      isEnabled: true,
      discardStdin: false,
    }).start();
    return {
      update: (t) => {
        spinner.text = t;
      },
      succeed: (t) => (t ? spinner.succeed(t) : spinner.stop()),
      fail: () => spinner.stop(),
    };
  }
  if (!forced) return silent;
  let last = '';
  return {
    update: (t) => {
      // One line per distinct message (download percentages are coarsened by the caller).
      if (t !== last) io.stderr.write(`${t}\n`);
      last = t;
    },
    succeed: (t) => {
      if (t) io.stderr.write(`${t}\n`);
    },
    fail: () => undefined,
  };
}

/** "12.0 MiB / 64 MiB (18%)" for byte counts. */
export function transferText(received: number, total: number | undefined, coarse: boolean): string {
  if (total === undefined || total === 0) return formatSize(received);
  const pct = Math.floor((received * 100) / total);
  const shown = coarse ? Math.floor(pct / 10) * 10 : pct;
  return `${formatSize(received)} / ${formatSize(total)} (${shown}%)`;
}
