// The vmforge-nbd command line: qemu-nbd's options (qemu-nbd.c getopt table and checks, with its
// messages), resolved into one typed configuration. Options for features vmforge does not have
// fail with a clear message instead of being silently ignored.

import { Command, CommanderError, Option } from 'commander';
import { InvalidArgumentError } from '../../core/index.js';
import type { CacheMode, DetectZeroesMode, DiscardMode } from '../../nbd/export-device.js';
import { NBD_DEFAULT_PORT, NBD_MAX_STRING_SIZE } from '../../nbd/protocol.js';
import { parseSnapshotParam, type SnapshotSelector } from '../../img/snapshot-param.js';
import { parseBool, parseKeyvalPairs } from './objects.js';

export interface ExportSpec {
  file: string;
  name: string;
  description: string | undefined;
  format: string | undefined;
  readOnly: boolean;
  snapshot: boolean;
  allocationDepth: boolean;
  /**
   * Persistent dirty bitmaps to export as qemu:dirty-bitmap:NAME, in context-id order (-B
   * options in reverse, as qemu-nbd prepends each to its list; bitmap= keys in order).
   */
  bitmaps: string[];
  offset: number;
  /** -l: an internal snapshot loaded temporarily (implies read-only, as in qemu-nbd). */
  loadSnapshot?: SnapshotSelector | undefined;
}

export interface NbdCliConfig {
  mode: 'serve' | 'list';
  exports: ExportSpec[];
  socket: string | undefined;
  bind: string | undefined;
  port: number | undefined;
  shared: number;
  persistent: boolean;
  verbose: boolean;
  objects: string[];
  tlsCreds: string | undefined;
  tlsHostname: string | undefined;
  fork: boolean;
  pidFile: string | undefined;
  cache: CacheMode;
  discard: DiscardMode;
  detectZeroes: DetectZeroesMode;
  /** Seconds; 0 = no limit. */
  handshakeLimit: number;
}

/** Raw commander values. */
interface RawOptions {
  help?: boolean;
  version?: boolean;
  port?: string;
  bind?: string;
  socket?: string;
  shared?: string;
  persistent?: boolean;
  verbose?: boolean;
  exportName?: string;
  description?: string;
  offset?: string;
  allocationDepth?: boolean;
  bitmap?: string[];
  list?: boolean;
  object?: string[];
  tlsCreds?: string;
  tlsAuthz?: string;
  tlsHostname?: string;
  trace?: string;
  fork?: boolean;
  pidFile?: string;
  selinuxLabel?: string;
  connect?: string;
  disconnect?: boolean;
  format?: string;
  readOnly?: boolean;
  snapshot?: boolean;
  loadSnapshot?: string;
  nocache?: boolean;
  cache?: string;
  aio?: string;
  discard?: string;
  detectZeroes?: string;
  imageOpts?: boolean;
  handshakeLimit?: string;
  export?: string[];
}

export const USAGE = `Usage: vmforge-nbd [OPTIONS] FILE
  or:  vmforge-nbd -L [OPTIONS]
  or:  vmforge-nbd [OPTIONS] --export name=NAME,file=FILE[,...] [--export ...]
Network Block Device server and client (qemu-nbd compatible)

  -h, --help                display this help and exit
  -V, --version             output version information and exit

Connection properties:
  -p, --port=PORT           port to listen on (default \`${NBD_DEFAULT_PORT}')
  -b, --bind=IFACE          interface to bind to (default \`127.0.0.1';
                            qemu-nbd binds 0.0.0.0)
  -k, --socket=PATH         path to the unix socket
  -e, --shared=NUM          device can be shared by NUM clients (default '1', 0 = any)
  -t, --persistent          don't exit on the last connection
  -v, --verbose             log connections and rejected requests to stderr
  -x, --export-name=NAME    expose export by name (default is empty string)
  -D, --description=TEXT    export a human-readable description
      --handshake-limit=N   drop clients that have not finished the handshake
                            after N seconds (default 10, 0 = no limit)

Exposing part of the image:
  -o, --offset=OFFSET       offset into the image
  -A, --allocation-depth    expose the allocation depth (qemu:allocation-depth)
  -B, --bitmap=NAME         expose a persistent dirty bitmap (qemu:dirty-bitmap:NAME;
                            repeatable)

Several exports from one process:
      --export name=NAME,file=FILE[,format=FMT][,readonly=on][,snapshot=on]
               [,description=TEXT][,allocation-depth=on][,offset=N]
               [,bitmap=NAME[,bitmap=NAME...]]
                            add an export (repeatable); FILE may then be omitted

General purpose options:
  -L, --list                list exports available from another NBD server
  --object type,id=ID,...   define TLS credentials: tls-creds-x509 (dir/ca-cert.pem,
                            server-cert.pem, server-key.pem) or tls-creds-psk
                            (dir/keys.psk), with endpoint=server (or client for -L)
  --tls-creds=ID            use id of an earlier --object to require TLS
  --tls-hostname=HOSTNAME   override hostname used to check x509 certificate (-L)
  --fork                    fork off the server process and exit the parent
                            once the server is running
  --pid-file=PATH           store the server's process ID in the given file

Block device options:
  -f, --format=FORMAT       set image format (raw, qcow2)
  -r, --read-only           export read-only
  -s, --snapshot            writes go to a temporary overlay that is thrown away
  -l, --load-snapshot=SNAPSHOT_PARAM
                            load an internal snapshot inside FILE and export it
                            as an read-only device, SNAPSHOT_PARAM format is
                            'snapshot.id=[ID],snapshot.name=[NAME]', or
                            '[ID_OR_NAME]'
  -n, --nocache             disable host cache (same as --cache=none)
      --cache=MODE          set cache mode used to access the disk image, the
                            valid options are: 'none', 'writeback' (default),
                            'writethrough', 'directsync' and 'unsafe'
      --aio=MODE            set AIO mode (threads: the only mode Node.js has)
      --discard=MODE        set discard mode (ignore, unmap)
      --detect-zeroes=MODE  set detect-zeroes mode (off, on, unmap)

Socket activation: when started with LISTEN_PID/LISTEN_FDS (systemd, libnbd's
nbdinfo/nbdcopy "[ CMD ]"), serves on the inherited sockets.
`;

/** qemu_strtou64 / qemu_strtoi with base 0: decimal, 0x hex, 0 octal. */
function parseInteger(text: string): number | undefined {
  const t = text.trim();
  let v: number;
  if (/^0[xX][0-9a-fA-F]+$/.test(t)) v = parseInt(t.slice(2), 16);
  else if (/^0[0-7]+$/.test(t)) v = parseInt(t.slice(1), 8);
  else if (/^[+-]?\d+$/.test(t)) v = Number(t);
  else return undefined;
  return Number.isSafeInteger(v) ? v : undefined;
}

function once(name: string) {
  return (value: string, previous: string | undefined) => {
    if (previous !== undefined)
      throw new InvalidArgumentError(`${name} can only be specified once`);
    return value;
  };
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

export function buildCommand(): Command {
  const cmd = new Command('vmforge-nbd');
  cmd
    .exitOverride()
    .allowExcessArguments(true)
    .helpOption(false)
    .configureOutput({
      writeOut: () => undefined,
      writeErr: () => undefined,
      outputError: () => undefined,
    })
    .argument('[file...]')
    .addOption(new Option('-h, --help'))
    .addOption(new Option('-V, --version'))
    .addOption(new Option('-p, --port <port>'))
    .addOption(new Option('-b, --bind <iface>'))
    .addOption(new Option('-k, --socket <path>'))
    .addOption(new Option('-e, --shared <num>'))
    .addOption(new Option('-t, --persistent'))
    .addOption(new Option('-v, --verbose'))
    .addOption(new Option('-x, --export-name <name>'))
    .addOption(new Option('-D, --description <text>'))
    .addOption(new Option('-o, --offset <offset>'))
    .addOption(new Option('-A, --allocation-depth'))
    .addOption(new Option('-B, --bitmap <name>').argParser(collect))
    .addOption(new Option('-L, --list'))
    .addOption(new Option('--object <spec>').argParser(collect))
    .addOption(new Option('--tls-creds <id>'))
    .addOption(new Option('--tls-authz <id>'))
    .addOption(new Option('--tls-hostname <name>'))
    .addOption(new Option('-T, --trace <opts>'))
    .addOption(new Option('--fork'))
    .addOption(new Option('--pid-file <path>'))
    .addOption(new Option('--selinux-label <label>'))
    .addOption(new Option('-c, --connect <dev>'))
    .addOption(new Option('-d, --disconnect'))
    .addOption(new Option('-f, --format <format>'))
    .addOption(new Option('-r, --read-only'))
    .addOption(new Option('-s, --snapshot'))
    .addOption(new Option('-l, --load-snapshot <param>'))
    .addOption(new Option('-n, --nocache'))
    .addOption(new Option('--cache <mode>').argParser(once('-n and --cache')))
    .addOption(new Option('--aio <mode>').argParser(once('--aio')))
    .addOption(new Option('--discard <mode>').argParser(once('--discard')))
    .addOption(new Option('--detect-zeroes <mode>'))
    .addOption(new Option('--image-opts'))
    .addOption(new Option('--handshake-limit <seconds>'))
    .addOption(new Option('--export <spec>').argParser(collect));
  return cmd;
}

export type ParseOutcome =
  { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: NbdCliConfig };

/** Commander's parse errors, in getopt's words (as qemu-nbd prints them). */
export function commanderText(err: CommanderError): string {
  const m = err.message.replace(/^error: /, '');
  let match = /^unknown option '([^']+)'/.exec(m);
  if (match) return `unrecognized option '${match[1]}'`;
  match = /^option '([^']+)' argument missing/.exec(m);
  if (match) {
    const flags = match[1]!.split(/[ ,]+/);
    const long = flags.find((f) => f.startsWith('--'));
    return `option '${long ?? flags[0]}' requires an argument`;
  }
  return m;
}

function unsupported(flag: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`${flag} is not supported by vmforge-nbd: ${why}`);
}

function parseExportSpec(text: string): ExportSpec {
  const pairs = parseKeyvalPairs(text);
  const kv = new Map(pairs);
  const allowed = [
    'name',
    'file',
    'format',
    'readonly',
    'snapshot',
    'description',
    'allocation-depth',
    'offset',
    'bitmap',
  ];
  for (const k of kv.keys()) {
    if (!allowed.includes(k)) throw new InvalidArgumentError(`--export: unknown parameter '${k}'`);
  }
  const file = kv.get('file');
  if (!file) throw new InvalidArgumentError("--export: Parameter 'file' is missing");
  const name = kv.get('name') ?? '';
  const offsetText = kv.get('offset');
  const offset = offsetText === undefined ? 0 : parseInteger(offsetText);
  if (offset === undefined || offset < 0) {
    throw new InvalidArgumentError(`Invalid offset '${offsetText}'`);
  }
  const bool = (k: string) => (kv.has(k) ? parseBool(k, kv.get(k)!) : false);
  return {
    file,
    name,
    description: kv.get('description'),
    format: kv.get('format'),
    readOnly: bool('readonly'),
    snapshot: bool('snapshot'),
    allocationDepth: bool('allocation-depth'),
    // bitmap= may repeat (the other keys: the last one wins).
    bitmaps: pairs.filter(([k]) => k === 'bitmap').map(([, v]) => v),
    offset,
  };
}

/** Parse argv (after "nbd") into a configuration, with qemu-nbd's checks and messages. */
export function parseNbdArgs(argv: readonly string[]): ParseOutcome {
  const cmd = buildCommand();
  cmd.parse([...argv], { from: 'user' });
  const o = cmd.opts<RawOptions>();
  const files = cmd.args;
  if (o.help) return { kind: 'help' };
  if (o.version) return { kind: 'version' };

  // Features qemu-nbd has and vmforge-nbd does not: refuse rather than ignore.
  if (o.connect !== undefined || o.disconnect) {
    throw unsupported('-c/-d', 'use the kernel nbd-client with vmforge-nbd --socket');
  }
  if (o.imageOpts) throw unsupported('--image-opts', 'give the file name and -f');
  if (o.trace !== undefined) throw unsupported('-T/--trace', 'use -v or NODE_DEBUG=vmforge:nbd');
  if (o.tlsAuthz !== undefined) {
    if (o.tlsCreds === undefined) {
      throw new InvalidArgumentError('--tls-authz is not permitted without --tls-creds');
    }
    throw unsupported('--tls-authz', 'authorization lists');
  }
  if (o.selinuxLabel !== undefined) {
    throw new InvalidArgumentError('SELinux support not enabled in this binary');
  }

  let shared = 1;
  if (o.shared !== undefined) {
    const v = parseInteger(o.shared);
    if (v === undefined || v < 0 || v > 0x7fffffff) {
      throw new InvalidArgumentError(`Invalid shared device number '${o.shared}'`);
    }
    shared = v;
  }
  let offset = 0;
  if (o.offset !== undefined) {
    const v = parseInteger(o.offset);
    if (v === undefined || v < 0) throw new InvalidArgumentError(`Invalid offset '${o.offset}'`);
    offset = v;
  }
  if (o.socket !== undefined && !o.socket.startsWith('/')) {
    throw new InvalidArgumentError('socket path must be absolute');
  }
  if (o.exportName !== undefined && Buffer.byteLength(o.exportName) > NBD_MAX_STRING_SIZE) {
    throw new InvalidArgumentError(`export name '${o.exportName}' too long`);
  }
  if (o.description !== undefined && Buffer.byteLength(o.description) > NBD_MAX_STRING_SIZE) {
    throw new InvalidArgumentError(`export description '${o.description}' too long`);
  }
  if (o.nocache && o.cache !== undefined) {
    throw new InvalidArgumentError('-n and --cache can only be specified once');
  }
  const cacheText = o.nocache ? 'none' : (o.cache ?? 'writeback');
  if (!['none', 'writeback', 'writethrough', 'directsync', 'unsafe'].includes(cacheText)) {
    throw new InvalidArgumentError(`Invalid cache mode \`${cacheText}'`);
  }
  if (o.aio !== undefined && o.aio !== 'threads') {
    if (o.aio === 'native' || o.aio === 'io_uring') {
      throw unsupported(`--aio=${o.aio}`, 'Node.js does asynchronous I/O with threads');
    }
    throw new InvalidArgumentError(`Invalid aio mode '${o.aio}'`);
  }
  const discardText = o.discard ?? 'ignore';
  // bdrv_parse_discard_flags: "off"/"ignore" and "on"/"unmap".
  const discard: DiscardMode | undefined =
    discardText === 'ignore' || discardText === 'off'
      ? 'ignore'
      : discardText === 'unmap' || discardText === 'on'
        ? 'unmap'
        : undefined;
  if (!discard) throw new InvalidArgumentError(`Invalid discard mode \`${discardText}'`);
  const dz = o.detectZeroes ?? 'off';
  if (dz !== 'off' && dz !== 'on' && dz !== 'unmap') {
    throw new InvalidArgumentError(
      `Failed to parse detect_zeroes mode: invalid parameter value: ${dz}`,
    );
  }
  if (dz === 'unmap' && discard !== 'unmap') {
    throw new InvalidArgumentError(
      'setting detect-zeroes to unmap is not allowed without setting discard operation to unmap',
    );
  }
  let handshakeLimit = 10;
  if (o.handshakeLimit !== undefined) {
    const v = parseInteger(o.handshakeLimit);
    if (v === undefined || v < 0) {
      throw new InvalidArgumentError(`Invalid handshake limit '${o.handshakeLimit}'`);
    }
    handshakeLimit = v;
  }
  let port: number | undefined;
  if (o.port !== undefined) {
    const v = parseInteger(o.port);
    if (v === undefined || v < 0 || v > 65535)
      throw new InvalidArgumentError(`port ${o.port} out of range`);
    port = v;
  }

  const list = o.list ?? false;
  const exports: ExportSpec[] = [];
  if (list) {
    if (files.length !== 0)
      throw new InvalidArgumentError('List mode is incompatible with a file name');
    if (
      o.exportName !== undefined ||
      o.description !== undefined ||
      offset ||
      o.format !== undefined ||
      o.bitmap ||
      o.allocationDepth ||
      o.aio !== undefined ||
      o.discard !== undefined ||
      o.cache !== undefined ||
      o.nocache ||
      o.export
    ) {
      throw new InvalidArgumentError('List mode is incompatible with per-device settings');
    }
    if (o.fork) throw new InvalidArgumentError('List mode is incompatible with forking');
  } else {
    if (files.length > 1 || (files.length === 0 && !o.export)) {
      throw new InvalidArgumentError('Invalid number of arguments');
    }
    if (files.length === 1) {
      exports.push({
        file: files[0]!,
        name: o.exportName ?? '',
        description: o.description,
        format: o.format,
        // qemu-nbd: case 'l' falls through to case 'r'.
        readOnly: (o.readOnly ?? false) || o.loadSnapshot !== undefined,
        snapshot: o.snapshot ?? false,
        allocationDepth: o.allocationDepth ?? false,
        bitmaps: [...(o.bitmap ?? [])].reverse(),
        offset,
        loadSnapshot: o.loadSnapshot === undefined ? undefined : parseSnapshotParam(o.loadSnapshot),
      });
    } else if (
      o.exportName !== undefined ||
      o.description !== undefined ||
      o.format !== undefined ||
      o.readOnly ||
      o.loadSnapshot !== undefined ||
      o.snapshot ||
      o.allocationDepth ||
      o.bitmap ||
      offset
    ) {
      throw new InvalidArgumentError(
        '-x, -D, -f, -r, -l, -s, -A, -B and -o apply to FILE; give them inside --export instead',
      );
    }
    for (const spec of o.export ?? []) exports.push(parseExportSpec(spec));
  }

  if (o.tlsHostname !== undefined && o.tlsCreds === undefined) {
    throw new InvalidArgumentError('--tls-hostname is not permitted without --tls-creds');
  }
  if (o.tlsHostname !== undefined && !list) {
    throw new InvalidArgumentError('TLS hostname is only supported with export list');
  }

  return {
    kind: 'run',
    config: {
      mode: list ? 'list' : 'serve',
      exports,
      socket: o.socket,
      bind: o.bind,
      port,
      shared,
      persistent: o.persistent ?? false,
      verbose: o.verbose ?? false,
      objects: o.object ?? [],
      tlsCreds: o.tlsCreds,
      tlsHostname: o.tlsHostname,
      fork: o.fork ?? false,
      pidFile: o.pidFile,
      cache: cacheText as CacheMode,
      discard,
      detectZeroes: dz,
      handshakeLimit,
    },
  };
}

export { CommanderError };
