// `vmforge qmp SOCKET COMMAND [JSON-ARGS]`: run one QMP command and print its JSON reply.
// SOCKET is a unix socket path or tcp:HOST:PORT. `vmforge qmp SOCKET hmp 'info cpus'` runs an
// HMP command through human-monitor-command and prints its text.

import { QmpClient, type QmpTarget } from '../../qemu/index.js';
import { usageError, type CliIO } from '../io.js';
import type { Command } from '../program.js';

export function registerQmp(program: Command, io: CliIO): void {
  program
    .command('qmp')
    .description('run one QMP command against a running VM and print the reply')
    .argument('<socket>', 'QMP socket: a unix socket path or tcp:HOST:PORT')
    .argument('<command>', 'QMP command (e.g. query-status), or hmp')
    .argument('[args...]', 'JSON object of arguments (for hmp: the HMP command line)')
    .option('--timeout <seconds>', 'wait at most SECONDS for the reply', '30')
    .action(async (socket: string, command: string, rest: string[], opts: { timeout: string }) => {
      const timeoutMs = Number(opts.timeout) * 1000;
      if (!(timeoutMs > 0))
        throw usageError(`--timeout expects a positive number of seconds, got '${opts.timeout}'`);
      const target = parseTarget(socket);
      let args: Record<string, unknown> | undefined;
      if (command !== 'hmp' && rest.length > 0) {
        if (rest.length > 1) throw usageError('JSON-ARGS must be one argument (quote it)');
        try {
          args = JSON.parse(rest[0]!) as Record<string, unknown>;
        } catch (err) {
          throw usageError(`JSON-ARGS is not valid JSON: ${(err as Error).message}`);
        }
        if (typeof args !== 'object' || args === null || Array.isArray(args)) {
          throw usageError('JSON-ARGS must be a JSON object, e.g. \'{"id":"disk0"}\'');
        }
      }
      if (command === 'hmp' && rest.length === 0)
        throw usageError('hmp needs a command line, e.g. hmp "info cpus"');
      const qmp = await QmpClient.connect(target, {
        connectTimeoutMs: 2000,
        commandTimeoutMs: timeoutMs,
      });
      try {
        if (command === 'hmp') {
          io.stdout.write(await qmp.hmp(rest.join(' ')));
        } else {
          const ret = await qmp.execute(command, args);
          io.stdout.write(`${JSON.stringify(ret, null, 2)}\n`);
        }
      } finally {
        await qmp.close();
      }
    });
}

function parseTarget(socket: string): QmpTarget {
  const m = /^tcp:(.*):(\d{1,5})$/.exec(socket);
  if (m) return { host: m[1]!.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port: Number(m[2]) };
  return { path: socket };
}
