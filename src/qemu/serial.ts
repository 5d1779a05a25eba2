// The guest's serial console as QEMU writes it to a log file: follow it, wait for a regex with a
// timeout, and give a readable tail for error messages. Terminal escape sequences (the UEFI
// shell paints with ANSI colours and cursor moves) are removed before matching and showing.

import { open } from 'node:fs/promises';
import { AbortError, EnvironmentError } from '../core/index.js';

/** Text kept for matching; a marker must appear within the last 1 MiB of output. */
const WINDOW = 1024 * 1024;
const POLL_MS = 100;

// CSI sequences (ESC [ … final byte), OSC/other two-byte escapes, and stray control characters
// except newline and tab.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]/g;

export function stripTerminalCodes(text: string): string {
  return text.replace(ESCAPES, '').replace(/\r\n?/g, '\n');
}

export class SerialTimeoutError extends EnvironmentError {
  override name = 'SerialTimeoutError';
  constructor(pattern: RegExp, timeoutMs: number, tail: string) {
    super(
      `timed out after ${timeoutMs / 1000} s waiting for ${String(pattern)} on the serial console` +
        (tail ? `; last serial output:\n${tail}` : '; the guest printed nothing'),
      { code: 'VMF_WAIT_TIMEOUT' },
    );
  }
}

export class SerialEndedError extends EnvironmentError {
  override name = 'SerialEndedError';
  constructor(pattern: RegExp, why: string, tail: string) {
    super(
      `${why} before ${String(pattern)} appeared on the serial console` +
        (tail ? `; last serial output:\n${tail}` : '; the guest printed nothing'),
      { code: 'VMF_WAIT_ENDED' },
    );
  }
}

export interface WaitForOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Stop waiting when this settles (e.g. QEMU exited); its value explains why. */
  until?: Promise<string>;
}

export class SerialLog {
  readonly path: string;
  #offset = 0;
  #text = '';
  #decoder = new TextDecoder();

  constructor(path: string) {
    this.path = path;
  }

  /** Read whatever was appended since the last read. */
  async poll(): Promise<void> {
    let fh;
    try {
      fh = await open(this.path, 'r');
    } catch {
      return; // not created yet
    }
    try {
      const buf = Buffer.alloc(256 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.#offset);
        if (bytesRead === 0) break;
        this.#offset += bytesRead;
        this.#text += stripTerminalCodes(
          this.#decoder.decode(buf.subarray(0, bytesRead), { stream: true }),
        );
        if (this.#text.length > WINDOW) this.#text = this.#text.slice(-WINDOW);
      }
    } finally {
      await fh.close();
    }
  }

  /** The cleaned text seen so far (last 1 MiB). */
  get text(): string {
    return this.#text;
  }

  /** The last `lines` non-empty lines, cleaned. */
  tail(lines = 20): string {
    return this.#text
      .split('\n')
      .map((l) => l.trimEnd())
      .filter((l) => l.length > 0)
      .slice(-lines)
      .join('\n');
  }

  /**
   * Resolve with the first match of `pattern` in the output, already there or yet to come.
   * Rejects with SerialTimeoutError on timeout, SerialEndedError when `until` settles first.
   */
  async waitFor(pattern: RegExp, options: WaitForOptions = {}): Promise<RegExpExecArray> {
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    let ended: string | undefined;
    void options.until?.then(
      (why) => (ended = why),
      (err: unknown) => (ended = String(err)),
    );
    const re = new RegExp(pattern.source, pattern.flags.replace('g', ''));
    for (;;) {
      const endedBeforePoll = ended;
      await this.poll();
      const m = re.exec(this.#text);
      if (m) return m;
      if (endedBeforePoll !== undefined)
        throw new SerialEndedError(pattern, endedBeforePoll, this.tail());
      if (options.signal?.aborted)
        throw new AbortError('waiting for the serial console aborted', {
          cause: options.signal.reason,
        });
      if (Date.now() >= deadline)
        throw new SerialTimeoutError(pattern, options.timeoutMs!, this.tail());
      await new Promise((r) =>
        setTimeout(r, Math.min(POLL_MS, Math.max(0, deadline - Date.now()))),
      );
    }
  }
}
