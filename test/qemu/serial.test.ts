// Serial log following: matches across reads, terminal codes stripped, timeout and early end
// both carry the tail of what the guest printed.
import { appendFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  SerialEndedError,
  SerialLog,
  SerialTimeoutError,
  stripTerminalCodes,
} from '../../src/qemu/index.js';
import { tempDir } from '../support/tmp.js';

describe('stripTerminalCodes', () => {
  it('removes ANSI colour and cursor sequences and CRs as the UEFI shell prints them', () => {
    const raw = '\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m\x1b[37m\x1b[40mecho hi\r\n\x1b[07;01Hhi\r\n';
    expect(stripTerminalCodes(raw)).toBe('Shell> echo hi\nhi\n');
  });
});

describe('SerialLog', () => {
  it('finds a marker written later, split across writes, before the file even exists', async () => {
    const path = join(await tempDir(), 'serial.log');
    const log = new SerialLog(path);
    const found = log.waitFor(/BOOT-(\d+) OK/, { timeoutMs: 5000 });
    setTimeout(() => void writeFile(path, 'firmware...\r\nBOOT-4'), 150);
    setTimeout(() => void appendFile(path, '2 \x1b[32mOK\x1b[0m\r\n'), 400);
    const m = await found;
    expect(m[0]).toBe('BOOT-42 OK');
    expect(m[1]).toBe('42');
  });

  it('times out with the tail of the output', async () => {
    const path = join(await tempDir(), 'serial.log');
    await writeFile(path, Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\r\n'));
    const log = new SerialLog(path);
    const err = await log.waitFor(/never/, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SerialTimeoutError);
    expect((err as Error).message).toMatch(
      /^timed out after 0.3 s waiting for \/never\/ on the serial console; last serial output:\nline 10\n/,
    );
    expect((err as Error).message.endsWith('line 29')).toBe(true);
  });

  it('gives up when the guest is gone, after one last read', async () => {
    const path = join(await tempDir(), 'serial.log');
    await writeFile(path, 'Shell> reset -s\r\n');
    const log = new SerialLog(path);
    const until = new Promise<string>((r) => setTimeout(() => r('QEMU exited with status 0'), 100));
    const err = await log.waitFor(/MARKER/, { timeoutMs: 5000, until }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SerialEndedError);
    expect((err as Error).message).toBe(
      'QEMU exited with status 0 before /MARKER/ appeared on the serial console; last serial output:\nShell> reset -s',
    );
  });

  it('still matches output written just before the end', async () => {
    const path = join(await tempDir(), 'serial.log');
    const log = new SerialLog(path);
    const until = (async () => {
      await writeFile(path, 'MARKER\n');
      return 'QEMU exited';
    })();
    expect((await log.waitFor(/MARKER/, { until }))[0]).toBe('MARKER');
  });
});
