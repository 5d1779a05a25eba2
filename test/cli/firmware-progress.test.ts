import { describe, expect, it } from 'vitest';
import { progressSink, transferText } from '../../src/cli/firmware/progress.js';
import type { CliIO } from '../../src/cli/io.js';

function io(stderr: { isTTY?: boolean; columns?: number }, env: Record<string, string> = {}) {
  const writes: string[] = [];
  const s = { ...stderr, write: (c: string | Uint8Array) => writes.push(String(c)) };
  const cli: CliIO = { stdout: { write: () => true }, stderr: s, env, cwd: '/' };
  return { cli, writes };
}

describe('firmware progress sink', () => {
  it('stays silent off a terminal unless -p asks, then prints each distinct phase once', () => {
    const quiet = io({});
    progressSink(quiet.cli, false).update('downloading');
    expect(quiet.writes).toEqual([]);
    const forced = io({});
    const sink = progressSink(forced.cli, true);
    sink.update('downloading 1 MiB');
    sink.update('downloading 1 MiB');
    sink.update('verify');
    expect(forced.writes).toEqual(['downloading 1 MiB\n', 'verify\n']);
  });

  it('does not start a spinner on a zero-width pseudo-terminal (ora would loop forever)', () => {
    const zero = io({ isTTY: true, columns: 0 });
    const sink = progressSink(zero.cli, false);
    sink.update('x'.repeat(200));
    sink.succeed();
    expect(zero.writes).toEqual([]);
  });

  it('formats transfers, coarsely off a terminal', () => {
    expect(transferText(1536 * 1024, 2 * 1024 * 1024, false)).toBe('1.5 MiB / 2 MiB (75%)');
    expect(transferText(1536 * 1024, 2 * 1024 * 1024, true)).toBe('1.5 MiB / 2 MiB (70%)');
    expect(transferText(1024, undefined, false)).toBe('1 KiB');
  });
});
