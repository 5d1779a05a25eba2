import { describe, expect, it } from 'vitest';
import { captureIO } from '../../src/cli/io.js';
import { progressMode, progressReporter } from '../../src/cli/img/progress.js';

describe('qemu-img style progress', () => {
  it('redraws on moves of more than 1%, and at 0 and 100 (qemu_progress_print)', () => {
    const cap = captureIO();
    const p = progressReporter(cap.io, 'qemu');
    for (const v of [0, 0.5, 1.2, 1.9, 2.3, 50, 50.5, 100]) p.update(v);
    p.end();
    expect(cap.out).toBe(
      '    (0.00/100%)\r    (1.20/100%)\r    (2.30/100%)\r    (50.00/100%)\r    (100.00/100%)\r\n',
    );
  });

  it('json lines on whole-percent changes', () => {
    const cap = captureIO();
    const p = progressReporter(cap.io, 'json');
    for (const v of [0, 0.4, 1.5, 1.7, 100]) p.update(v);
    expect(cap.out).toBe('{"progress":0}\n{"progress":1.5}\n{"progress":100}\n');
  });

  it('chooses the mode from -p, --progress, -q and the terminal', () => {
    const cap = captureIO();
    expect(progressMode(cap.io, false, undefined, false)).toBeUndefined();
    expect(progressMode(cap.io, true, undefined, false)).toBe('qemu');
    expect(progressMode(cap.io, true, undefined, true)).toBeUndefined();
    expect(progressMode(cap.io, false, 'json', false)).toBe('json');
    expect(progressMode(captureIO({ VMFORGE_PROGRESS: 'json' }).io, false, undefined, false)).toBe(
      'json',
    );
    const tty = { ...cap.io, stdout: { write: () => true, isTTY: true, columns: 80 } };
    expect(progressMode(tty, true, undefined, false)).toBe('bar');
    expect(() => progressMode(cap.io, true, 'xml', false)).toThrow(
      '--progress must be used with human or json as argument.',
    );
  });
});
