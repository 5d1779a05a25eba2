// The CLI's view of the process: output streams, environment, TTY-ness. Commands write through
// a CliIO so tests can run them in-process and capture exactly what a user would see.

export interface OutputStream {
  write(chunk: string | Uint8Array): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export interface CliIO {
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
}

export function processIO(): CliIO {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() };
}

/** An in-memory CliIO for tests: run a command, then read `out` / `err`. */
export function captureIO(env: Record<string, string | undefined> = {}, cwd = process.cwd()) {
  const out: string[] = [];
  const err: string[] = [];
  const dec = new TextDecoder();
  const io: CliIO = {
    stdout: {
      write: (c: string | Uint8Array) => out.push(typeof c === 'string' ? c : dec.decode(c)),
    },
    stderr: {
      write: (c: string | Uint8Array) => err.push(typeof c === 'string' ? c : dec.decode(c)),
    },
    env,
    cwd,
  };
  return {
    io,
    get out() {
      return out.join('');
    },
    get err() {
      return err.join('');
    },
  };
}

/**
 * Thrown by a command to end with a given exit code after it printed what it had to say
 * (qemu-img check's 2/3, compare's 1). `message`, if non-empty, goes to stderr with the prefix.
 */
export class CliExit extends Error {
  readonly exitCode: number;
  readonly usageHint: boolean;
  constructor(exitCode: number, message = '', usageHint = false) {
    super(message);
    this.exitCode = exitCode;
    this.usageHint = usageHint;
  }
}

/** qemu-img's error_exit(): message, a usage hint, exit 1. */
export function usageError(message: string): CliExit {
  return new CliExit(1, message, true);
}
