// Option value parsers shared by the hugepages commands. Each throws InvalidArgumentError with
// the option named, which the CLI prints as one line.

import { InvalidArgumentError, isVmforgeError, parseSize } from '../../core/index.js';
import { parsePageSize, type MountSize, type NumaPlacement } from '../../hugetlbfs/index.js';
import { CliExit } from '../io.js';

export function optPageSize(text: string | undefined): number | undefined {
  return text === undefined ? undefined : parsePageSize(text);
}

/** A non-negative integer ("--node 1", "--count 8"). */
export function optInteger(text: string, name: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new InvalidArgumentError(`Invalid ${name} '${text}': expected a non-negative integer`);
  }
  return Number(text);
}

/** Memory sizes: bare numbers are MiB, as qemu -m reads them. */
export function optMemory(text: string, name: string): number {
  return parseSize(text, name, { defaultSuffix: 'M' });
}

/** size=/min_size=: bytes (K/M/G suffixes) or a percentage of the pool, as hugetlbfs takes. */
export function optMountSize(text: string, name: string): MountSize {
  const m = /^(\d+(?:\.\d+)?)%$/.exec(text);
  if (m) return { percent: Number(m[1]) };
  return parseSize(text, name);
}

/** --mode: octal permission bits ("1770", "0755"). */
export function optMode(text: string): number {
  if (!/^[0-7]{1,4}$/.test(text)) {
    throw new InvalidArgumentError(`Invalid mode '${text}': expected octal digits, e.g. 0770`);
  }
  return parseInt(text, 8);
}

/** --numa 0=1G,1=1G (host node = size per guest node, in guest node order). Repeatable. */
export function optNuma(texts: string[]): NumaPlacement[] {
  const out: NumaPlacement[] = [];
  for (const item of texts.flatMap((t) => t.split(','))) {
    const m = /^(\d+)=(.+)$/.exec(item.trim());
    if (!m) {
      throw new InvalidArgumentError(
        `Invalid --numa entry '${item}': expected HOSTNODE=SIZE, e.g. 0=1G,1=1G`,
      );
    }
    out.push({ hostNode: Number(m[1]), size: optMemory(m[2]!, `NUMA memory '${item}'`) });
  }
  return out;
}

/** on|off (QEMU's boolean spelling; yes/no/true/false also accepted). */
export function optOnOff(text: string, name: string): boolean {
  const t = text.toLowerCase();
  if (['on', 'yes', 'true', '1'].includes(t)) return true;
  if (['off', 'no', 'false', '0'].includes(t)) return false;
  throw new InvalidArgumentError(`Invalid ${name} '${text}': expected on or off`);
}

/** Run a command action; "not enough huge pages" ends with exit code 2, other errors with 1. */
export async function shortIsTwo(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (isVmforgeError(err) && err.code === 'VMF_HUGEPAGES_SHORT')
      throw new CliExit(2, err.message);
    throw err;
  }
}
