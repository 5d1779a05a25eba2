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

const guarded = new WeakSet<object>();

/**
 * process.stdout or process.stderr, with a closed pipe not treated as a crash (like qemu-img,
 * which ignores SIGPIPE). Node creates these streams on first access, and that costs ~3 ms of a
 * start (the stream machinery, and the net module for a pipe): a command that prints nothing,
 * like most converts, should not pay for it.
 */
export function stdio(name: 'stdout' | 'stderr'): NodeJS.WriteStream {
  const stream = process[name];
  if (!guarded.has(stream)) {
    guarded.add(stream);
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  return stream;
}

/** The process's own streams (created on first use), environment and directory. */
export function processIO(): CliIO {
  return {
    get stdout() {
      return stdio('stdout');
    },
    get stderr() {
      return stdio('stderr');
    },
    env: process.env,
    cwd: process.cwd(),
  };
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
