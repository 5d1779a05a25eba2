// Helpers shared by the firmware subcommands: JSON output, option parsing.

import { InvalidArgumentError } from '../../core/index.js';
import type { CliIO } from '../io.js';

export function printJson(io: CliIO, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 4)}\n`);
}

export function parsePositiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1)
      throw new InvalidArgumentError(`Invalid ${name} '${v}': expected a positive integer`);
    return n;
  };
}

export function parseSeconds(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0))
      throw new InvalidArgumentError(`Invalid ${name} '${v}': expected a number of seconds`);
    return n;
  };
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
