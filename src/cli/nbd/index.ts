// `vmforge nbd` / `vmforge-nbd`: the qemu-nbd compatible daemon and export lister, loaded on
// demand as a subprogram of `vmforge` (src/cli/subprograms.ts).

import { InvalidArgumentError, isVmforgeError } from '../../core/index.js';
import { listNbdExports } from '../../nbd/client.js';
import type { CliIO } from '../io.js';
import { packageVersion } from '../main.js';
import { childStartupStderr, forkDaemon } from './daemon.js';
import { formatExportList } from './list.js';
import { createObject, findTlsCreds } from './objects.js';
import {
  CommanderError,
  USAGE,
  commanderText,
  parseNbdArgs,
  type NbdCliConfig,
} from './options.js';
import { serve } from './serve.js';

const TOOL = 'vmforge-nbd';

async function list(config: NbdCliConfig, io: CliIO): Promise<number> {
  const objects = [];
  for (const spec of config.objects) objects.push(await createObject(spec));
  const creds =
    config.tlsCreds === undefined ? undefined : findTlsCreds(objects, config.tlsCreds, 'client');
  const host = config.bind ?? '127.0.0.1';
  const unix = config.socket !== undefined;
  const address = unix ? { socket: config.socket! } : { host, port: config.port ?? 10809 };
  // qemu-nbd checks x509 certificates against --tls-hostname, or the TCP host.
  const hostname = config.tlsHostname ?? (unix ? undefined : host);
  if (creds?.kind === 'x509' && hostname === undefined) {
    throw new InvalidArgumentError('No hostname for certificate validation');
  }
  const result = await listNbdExports({
    ...address,
    tls: creds ? { creds, hostname } : undefined,
  });
  io.stdout.write(formatExportList(result.exports));
  return 0;
}

/** Run vmforge-nbd with `argv` (the words after "nbd"). Returns the exit code. */
export async function runNbd(rawArgv: string[], parentIO: CliIO): Promise<number> {
  // A --fork child reports startup problems through a pipe to the parent (daemon.ts).
  const startup = childStartupStderr(parentIO.env);
  const io: CliIO = startup ? { ...parentIO, stderr: startup.stderr } : parentIO;
  const debug = rawArgv.includes('--debug') || io.env['VMFORGE_DEBUG'] === '1';
  const argv = rawArgv.filter((a) => a !== '--debug');
  try {
    const outcome = parseNbdArgs(argv);
    if (outcome.kind === 'help') {
      io.stdout.write(USAGE);
      return 0;
    }
    if (outcome.kind === 'version') {
      io.stdout.write(`${TOOL} ${await packageVersion()} (qemu-nbd 7.2 compatible)\n`);
      return 0;
    }
    const { config } = outcome;
    if (config.mode === 'list') return await list(config, io);
    if (config.fork) {
      return await forkDaemon(
        argv.filter((a) => a !== '--fork'),
        io,
      );
    }
    return await serve(config, io, startup ? { startup } : {});
  } catch (err) {
    if (err instanceof CommanderError) {
      io.stderr.write(
        `${TOOL}: ${commanderText(err)}\n${TOOL}: Try \`${TOOL} --help' for more information.\n`,
      );
      return 1;
    }
    if (isVmforgeError(err)) {
      io.stderr.write(`${TOOL}: ${err.message}\n`);
      if (err.message === 'Invalid number of arguments') {
        io.stderr.write(`Try \`${TOOL} --help' for more information.\n`);
      }
      if (debug && err.stack) io.stderr.write(`${err.stack}\n`);
      return 1;
    }
    const e = err instanceof Error ? err : new Error(String(err));
    io.stderr.write(`${TOOL}: internal error: ${e.message}\n`);
    if (debug && e.stack) io.stderr.write(`${e.stack}\n`);
    else io.stderr.write(`${TOOL}: (run with --debug or VMFORGE_DEBUG=1 for details)\n`);
    return 1;
  }
}
