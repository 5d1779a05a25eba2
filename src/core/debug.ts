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
    if (process.env['VMFORGE_DEBUG'] === '1')
      process.stderr.write(`vmforge:${section} ${msg} ${args.map(String).join(' ')}\n`);
    else l(msg, ...args);
  };
}
