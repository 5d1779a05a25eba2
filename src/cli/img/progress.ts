// Progress for long qemu-img commands (-p):
//   - on a terminal: a live bar (ora) with the percentage;
//   - otherwise: qemu-img's own text, "    (12.34/100%)" redrawn with a carriage return
//     (util/qemu-progress.c progress_simple_print), ending with a newline;
//   - --progress=json (or VMFORGE_PROGRESS=json), a vmforge extension for pipelines: one JSON
//     object per line, {"progress": 12.34}, whenever the whole percent changes.
import { createRequire } from 'node:module';
import type { Ora, default as OraFactory } from 'ora';
import { printfFixed } from '../../core/index.js';
import { CliExit, type CliIO } from '../io.js';

export interface ProgressReporter {
  update: (percent: number) => void;
  end: () => void;
}

export type ProgressMode = 'qemu' | 'bar' | 'json';

/** Decide how -p / --progress show progress; undefined means no progress output. */
export function progressMode(
  io: CliIO,
  p: boolean,
  progressOption: string | undefined,
  quiet: boolean,
): ProgressMode | undefined {
  const wanted = progressOption ?? io.env['VMFORGE_PROGRESS'];
  if (wanted !== undefined && wanted !== 'json' && wanted !== 'human') {
    throw new CliExit(1, `--progress must be used with human or json as argument.`);
  }
  if (quiet) return undefined;
  if (wanted === 'json') return 'json';
  if (!p && wanted !== 'human') return undefined;
  const tty =
    io.stdout.isTTY === true && (io.stdout.columns ?? 0) > 0 && io.env['CI'] === undefined;
  return tty ? 'bar' : 'qemu';
}

function bar(percent: number, width: number): string {
  const full = Math.round((percent / 100) * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${printfFixed(percent, 2)}%`;
}

export function progressReporter(
  io: CliIO,
  mode: ProgressMode = 'qemu',
  label = '',
): ProgressReporter {
  if (mode === 'json') {
    let last = -1;
    return {
      update(percent) {
        const p = Math.min(100, Math.max(0, percent));
        if (Math.floor(p) === last) return;
        last = Math.floor(p);
        io.stdout.write(`${JSON.stringify({ progress: Number(printfFixed(p, 2)) })}\n`);
      },
      end() {},
    };
  }
  if (mode === 'bar') {
    // ora (and its dependencies) only for a live bar, loaded on demand: it is a noticeable part
    // of start-up otherwise. require() of an ES module is synchronous in Node >= 22.12.
    const ora = (createRequire(import.meta.url)('ora') as { default: typeof OraFactory }).default;
    const spinner: Ora = ora({
      stream: io.stdout as unknown as NodeJS.WritableStream,
      isEnabled: true,
      discardStdin: false,
      text: `${label}${bar(0, 30)}`,
    }).start();
    return {
      update(percent) {
        spinner.text = `${label}${bar(Math.min(100, Math.max(0, percent)), 30)}`;
      },
      end() {
        spinner.stop();
      },
    };
  }
  // qemu_progress_print(): redraw when the value moved by more than min_skip (1.0), and at
  // 0 and 100.
  let lastPrint = -Infinity;
  return {
    update(percent) {
      const p = Math.min(100, Math.max(0, percent));
      if (p > lastPrint + 1 || p < lastPrint - 1 || p === 0 || p === 100) {
        lastPrint = p;
        io.stdout.write(`    (${printfFixed(p, 2)}/100%)\r`);
      }
    },
    end() {
      io.stdout.write('\n');
    },
  };
}
