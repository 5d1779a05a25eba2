// -t / -T cache modes. vmforge has no O_DIRECT (Node cannot align buffers), so 'none' and
// 'directsync' fall back to page-cache I/O with the same flush semantics, with a warning.
import { CliExit } from '../io.js';
import type { ToolContext } from './common.js';

const MODES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'] as const;

export function hostCache(
  value: string | undefined,
  ctx: ToolContext,
  what = '',
): 'writeback' | 'unsafe' | 'writethrough' | undefined {
  if (value === undefined) return undefined;
  if (!(MODES as readonly string[]).includes(value))
    throw new CliExit(1, `Invalid ${what}cache option: ${value}`);
  if (value === 'none' || value === 'directsync') {
    ctx.io.stderr.write(
      `vmforge-img: warning: cache mode '${value}' needs O_DIRECT, which vmforge cannot use; using the page cache\n`,
    );
  }
  if (value === 'unsafe') return 'unsafe';
  if (value === 'writethrough' || value === 'directsync') return 'writethrough';
  return 'writeback';
}
