// vmforge hugepages status [--json]: pools per size and node, the default size, hugetlbfs mounts.

import type { Command } from 'commander';
import { formatSize } from '../../core/index.js';
import { readHugepageStatus, type HugepageStatus } from '../../hugetlbfs/index.js';
import { printJson, table } from './format.js';
import type { HugepagesContext } from './index.js';

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** The human report: hugeadm --pool-list columns plus free/reserved/surplus, nodes, mounts. */
export function formatStatus(s: HugepageStatus): string {
  if (!s.supported) return `Huge pages: not available: ${s.unsupportedReason}\n`;
  const def = s.defaultPageSize === undefined ? 'unknown' : formatSize(s.defaultPageSize);
  let out = `Huge page pools (default size ${def}):\n`;
  out += table(
    ['Size', 'Total', 'Free', 'Reserved', 'Surplus', 'Overcommit', 'Minimum', 'Maximum', 'Default'],
    s.pools.map((p) => [
      formatSize(p.pageSize),
      p.total,
      p.free,
      p.reserved,
      p.surplus,
      p.overcommit,
      p.minimum,
      p.maximum,
      p.isDefault ? '*' : '',
    ]),
  );
  const nodeRows = s.pools.flatMap((p) =>
    p.nodes.map((n) => [n.node, formatSize(p.pageSize), n.total, n.free, n.surplus]),
  );
  if (nodeRows.length) {
    nodeRows.sort((a, b) => (a[0] as number) - (b[0] as number));
    out += `\nPer NUMA node:\n`;
    out += table(['Node', 'Size', 'Total', 'Free', 'Surplus'], nodeRows);
  }
  out += '\nhugetlbfs mounts:';
  if (s.mounts.length === 0) {
    out += s.hugetlbfsAvailable ? ' none\n' : ' none (hugetlbfs is not in /proc/filesystems)\n';
  } else {
    out += '\n';
    out += table(
      ['Mount point', 'Page size', 'Size limit', 'Min size', 'Inodes', 'Owner', 'Mode'],
      s.mounts.map((m) => [
        m.mountPoint,
        formatSize(m.pageSize),
        m.size === undefined ? '-' : formatSize(m.size),
        m.minSize === undefined ? '-' : formatSize(m.minSize),
        m.nrInodes === undefined ? '-' : String(m.nrInodes),
        `${m.uid}:${m.gid}`,
        `${octal(m.mode)}${m.readOnly ? ' ro' : ''}`,
      ]),
    );
  }
  return out;
}

export function registerStatus(program: Command, ctx: HugepagesContext): void {
  program
    .command('status')
    .description('show huge page pools (per size and NUMA node) and hugetlbfs mounts')
    .option('--json', 'print JSON (sizes in bytes)')
    .action(async (opts: { json?: boolean }) => {
      const status = await readHugepageStatus({ host: ctx.host });
      if (opts.json) printJson(ctx.io, status);
      else ctx.io.stdout.write(formatStatus(status));
    });
}
