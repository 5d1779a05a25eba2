// One error hierarchy for all of vmforge, with stable `code`s and three kinds:
//   caller      - the caller asked for something invalid (bad option, bad size, wrong format name)
//   data        - the bytes are wrong (corrupt image, protocol violation, hostile input)
//   environment - the world is wrong (I/O error, missing file or tool, permission, full disk)
// plus `unsupported` for valid requests vmforge does not implement (yet, or by design).
// The CLI prints `err.message` and picks the exit code; stacks only with --debug.

export type ErrorKind = 'caller' | 'data' | 'environment' | 'unsupported';

export interface VmforgeErrorOptions {
  cause?: unknown;
  /** Extra machine-readable details (field names, offsets, paths). */
  details?: Record<string, unknown>;
}

export class VmforgeError extends Error {
  override name = 'VmforgeError';
  readonly code: string;
  readonly kind: ErrorKind;
  readonly details: Record<string, unknown>;
  /** Extra lines printed after the message (QEMU's error_append_hint). */
  hint: string | undefined;

  constructor(kind: ErrorKind, code: string, message: string, options: VmforgeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.code = code;
    this.details = options.details ?? {};
  }

  /** Attach a hint shown on the lines after the message. */
  withHint(hint: string): this {
    this.hint = this.hint ? `${this.hint}\n${hint}` : hint;
    return this;
  }
}

/** The caller's request is invalid: bad option value, conflicting flags, unknown format. */
export class InvalidArgumentError extends VmforgeError {
  override name = 'InvalidArgumentError';
  constructor(message: string, options: VmforgeErrorOptions & { code?: string } = {}) {
    super('caller', options.code ?? 'VMF_INVALID_ARGUMENT', message, options);
  }
}

/** An image's bytes violate its format specification. */
export class CorruptImageError extends VmforgeError {
  override name = 'CorruptImageError';
  constructor(message: string, options: VmforgeErrorOptions & { code?: string } = {}) {
    super('data', options.code ?? 'VMF_CORRUPT_IMAGE', message, options);
  }
}

/** A network peer violated its protocol. */
export class ProtocolError extends VmforgeError {
  override name = 'ProtocolError';
  constructor(message: string, options: VmforgeErrorOptions & { code?: string } = {}) {
    super('data', options.code ?? 'VMF_PROTOCOL', message, options);
  }
}

/** A valid request that this driver or build cannot perform. */
export class NotSupportedError extends VmforgeError {
  override name = 'NotSupportedError';
  constructor(message: string, options: VmforgeErrorOptions & { code?: string } = {}) {
    super('unsupported', options.code ?? 'VMF_NOT_SUPPORTED', message, options);
  }
}

/**
 * The environment failed us: I/O error, missing file, permission, missing tool.
 * `errno` keeps the system error code (ENOENT, ENOSPC, ...) when there is one.
 */
export class EnvironmentError extends VmforgeError {
  override name = 'EnvironmentError';
  readonly errno: string | undefined;
  constructor(
    message: string,
    options: VmforgeErrorOptions & { code?: string; errno?: string } = {},
  ) {
    super('environment', options.code ?? 'VMF_ENVIRONMENT', message, options);
    this.errno = options.errno ?? systemErrorCode(options.cause);
  }
}

/** Operation cancelled through an AbortSignal. */
export class AbortError extends VmforgeError {
  override name = 'AbortError';
  constructor(message = 'Operation aborted', options: VmforgeErrorOptions = {}) {
    super('environment', 'VMF_ABORTED', message, options);
  }
}

/** The `code` of a Node system error (ENOENT, EACCES, ...), if `err` is one. */
export function systemErrorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  }
  return undefined;
}

/** strerror()-style text for common errno codes, as QEMU prints them. */
const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ENOSPC: 'No space left on device',
  EEXIST: 'File exists',
  EROFS: 'Read-only file system',
  EIO: 'Input/output error',
  ENOMEDIUM: 'No medium found',
  EINVAL: 'Invalid argument',
  EFBIG: 'File too large',
  EBUSY: 'Device or resource busy',
  ENOTSUP: 'Operation not supported',
  EOPNOTSUPP: 'Operation not supported',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  EPIPE: 'Broken pipe',
  ETIMEDOUT: 'Connection timed out',
  EAGAIN: 'Resource temporarily unavailable',
};

export function strerror(code: string | undefined): string {
  return (code && STRERROR[code]) ?? code ?? 'Unknown error';
}

/** Wrap a Node fs/net error as an EnvironmentError with QEMU-like text: "<what>: <strerror>". */
export function fromSystemError(err: unknown, what: string): VmforgeError {
  if (err instanceof VmforgeError) return err;
  const errno = systemErrorCode(err);
  const text = errno ? strerror(errno) : err instanceof Error ? err.message : String(err);
  return new EnvironmentError(`${what}: ${text}`, errno ? { cause: err, errno } : { cause: err });
}

/**
 * Prefix context to an error's message, keeping its class, code and kind
 * (imago's err_context): withContext(err, "Could not open backing file 'b.qcow2'").
 */
export function withContext(err: unknown, context: string): VmforgeError {
  if (err instanceof VmforgeError) {
    err.message = `${context}: ${err.message}`;
    return err;
  }
  return fromSystemError(err, context);
}

export function isVmforgeError(err: unknown): err is VmforgeError {
  return err instanceof VmforgeError;
}

/** Throw AbortError if the signal has fired. Call between units of work. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const reason: unknown = signal.reason;
    throw reason instanceof VmforgeError ? reason : new AbortError(undefined, { cause: reason });
  }
}
