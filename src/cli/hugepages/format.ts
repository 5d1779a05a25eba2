// Text output helpers for the hugepages commands: aligned tables and action lists.

import { actionToShell, type HostAction } from '../../hugetlbfs/index.js';
import type { CliIO } from '../io.js';

/** Columns left-aligned for text, right-aligned for numbers; two spaces between columns. */
export function table(header: string[], rows: (string | number)[][], indent = '  '): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const numeric = header.map(
    (_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'),
  );
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map(
      (r) =>
        indent +
        r
          .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
          .join('  ')
          .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

/** Print what a command did or (dry run) would do, one shell command per line. */
export function printActions(io: CliIO, actions: readonly HostAction[]): void {
  for (const a of actions) io.stdout.write(`${actionToShell(a)}\n`);
}

export function printJson(io: CliIO, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
