// How qemu-img reports a failed read or block-status call of an image operation: QEMU's qcow2
// driver first prints its corruption event on a line of its own ("qcow2: Image is corrupt: ...;
// further non-fatal corruption events will be suppressed", block/qcow2.c
// qcow2_signal_corruption), then the command prints its message with strerror(-ret), which is
// "Input/output error" for corruption.
import { isVmforgeError, strerror, systemErrorCode, AbortError } from '../../core/index.js';
import type { ToolContext } from '../program.js';

/**
 * Print the corruption event `err` stands for, if any, and return the strerror() text qemu-img
 * would put after its own message. Errors that are not I/O failures (bugs, aborts) are thrown.
 */
export function reportIoError(ctx: ToolContext, err: unknown): string {
  if (err instanceof AbortError) throw err;
  if (isVmforgeError(err)) {
    if (err.code === 'VMF_QCOW2_CORRUPT') {
      ctx.io.stderr.write(
        `${err.message}; further non-fatal corruption events will be suppressed\n`,
      );
      return 'Input/output error';
    }
    if (ctx.debug) ctx.io.stderr.write(`${ctx.tool}: (cause: ${err.message})\n`);
    const errno = (err as { errno?: string }).errno ?? systemErrorCode(err.cause);
    if (errno) return strerror(errno);
    if (err.kind === 'data') return 'Input/output error';
    return err.message;
  }
  const errno = systemErrorCode(err);
  if (errno) return strerror(errno);
  throw err;
}
