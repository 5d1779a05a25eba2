// Debug logging through util.debuglog: NODE_DEBUG=vmforge:qcow2,vmforge:nbd (or VMFORGE_DEBUG=1 for all).
// node:util is loaded on first use, not at start-up (~1 ms of every CLI start).
import type { DebugLogger } from 'node:util';

const loggers = new Map<string, DebugLogger>();

export function debug(section: string): (msg: string, ...args: unknown[]) => void {
  let logger = loggers.get(section);
  if (!logger) {
    logger = process.getBuiltinModule('node:util').debuglog(`vmforge:${section}`);
    loggers.set(section, logger);
  }
  const l = logger;
  return (msg, ...args) => {
    if (process.env['VMFORGE_DEBUG'] === '1') {
      guardStderr();
      process.stderr.write(`vmforge:${section} ${msg} ${args.map(String).join(' ')}\n`);
    } else if (l.enabled) {
      guardStderr();
      l(msg, ...args);
    }
  };
}

/**
 * Debug output must not crash a command when stderr is a closed pipe (the CLI's own streams get
 * the same guard when first used, src/cli/io.ts). Only EPIPE is swallowed.
 */
function guardStderr(): void {
  if (process.stderr.listenerCount('error') > 0) return;
  process.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}
