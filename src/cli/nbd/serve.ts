// Server mode of vmforge-nbd: open the images, listen (unix socket, TCP, or the sockets systemd
// passed), serve until SIGTERM/SIGINT or, without -t, until the last client that completed a
// handshake has gone (qemu-nbd's rule), then flush and close everything.

import { InvalidArgumentError } from '../../core/index.js';
import type { BlockDevice } from '../../block/device.js';
import { NbdServer, type ListenAddress } from '../../nbd/server.js';
import { findExportBitmaps } from '../../nbd/export-bitmaps.js';
import type { DirtyBitmap } from '../../qcow2/bitmaps/index.js';
import type { NbdLogLevel } from '../../nbd/connection.js';
import { serverTls } from '../../nbd/tls.js';
import { NBD_DEFAULT_PORT } from '../../nbd/protocol.js';
import type { CliIO } from '../io.js';
import { LISTEN_FDS_START, removePidFile, socketActivationFds, writePidFile } from './daemon.js';
import { createObject, findTlsCreds } from './objects.js';
import { openExportImage } from './open-image.js';
import type { NbdCliConfig } from './options.js';

const TOOL = 'vmforge-nbd';

/** qemu-nbd socket_activation_validate_opts. */
function checkActivationConflicts(config: NbdCliConfig): void {
  if (config.socket !== undefined) {
    throw new InvalidArgumentError("Unix socket can't be set when using socket activation");
  }
  if (config.bind !== undefined) {
    throw new InvalidArgumentError("The interface can't be set when using socket activation");
  }
  if (config.port !== undefined) {
    throw new InvalidArgumentError("TCP port number can't be set when using socket activation");
  }
}

export interface ServeHooks {
  /** Resolves when the process is asked to stop (besides signals); for in-process use. */
  stopSignal?: Promise<string>;
  /** In a --fork child: the startup pipe to close once serving. */
  startup?: { ready: () => void };
}

export async function serve(
  config: NbdCliConfig,
  io: CliIO,
  hooks: ServeHooks = {},
): Promise<number> {
  const startup = hooks.startup;
  let stderr = io.stderr;
  const print = (text: string) => stderr.write(text);
  const log = (level: NbdLogLevel, message: string) => {
    if ((level === 'info' || level === 'debug') && !config.verbose) return;
    print(`${TOOL}: ${message}\n`);
  };

  if (config.cache === 'none' || config.cache === 'directsync') {
    // As vmforge-img: Node.js cannot do O_DIRECT I/O (no aligned buffers); flushes and FUA keep
    // their meaning, only the host page cache is not bypassed.
    print(
      `${TOOL}: warning: cache mode '${config.cache}' needs O_DIRECT, which vmforge cannot use; using the page cache\n`,
    );
  }
  const objects = [];
  for (const spec of config.objects) objects.push(await createObject(spec));
  const tls =
    config.tlsCreds === undefined
      ? undefined
      : serverTls(findTlsCreds(objects, config.tlsCreds, 'server'));

  const activated = socketActivationFds(io.env);
  if (activated > 0) checkActivationConflicts(config);
  const addresses: ListenAddress[] = [];
  if (activated > 0) {
    for (let i = 0; i < activated; i++) addresses.push({ kind: 'fd', fd: LISTEN_FDS_START + i });
  } else if (config.socket !== undefined) {
    addresses.push({ kind: 'unix', path: config.socket });
  } else {
    addresses.push({
      kind: 'tcp',
      host: config.bind ?? '127.0.0.1',
      port: config.port ?? NBD_DEFAULT_PORT,
    });
  }

  const devices: BlockDevice[] = [];
  const bitmaps: DirtyBitmap[][] = [];
  const closeDevices = async () => {
    for (const d of devices.splice(0)) {
      try {
        await d.close();
      } catch (err) {
        log('error', `closing '${d.filename}' failed: ${(err as Error).message}`);
      }
    }
  };
  let server: NbdServer | undefined;
  let pidWritten = false;
  try {
    for (const spec of config.exports) {
      const opened = await openExportImage(spec.file, {
        format: spec.format,
        readOnly: spec.readOnly,
        snapshot: spec.snapshot,
        loadSnapshot: spec.loadSnapshot,
        cache: config.cache,
        discard: config.discard,
        detectZeroes: config.detectZeroes,
        offset: spec.offset,
      });
      for (const w of opened.warnings) print(`${w}\n`);
      devices.push(opened.device);
      // qemu-nbd looks the bitmaps up once the image is open (blk_exp_add -> nbd_export_create).
      const readOnly = spec.readOnly || opened.device.capabilities.readOnly;
      bitmaps.push(await findExportBitmaps(opened.device, spec.bitmaps, readOnly));
    }

    let finish!: (reason: string) => void;
    const finished = new Promise<string>((resolve) => (finish = resolve));
    server = new NbdServer({
      exports: config.exports.map((spec, i) => ({
        device: devices[i]!,
        name: spec.name,
        ...(spec.description !== undefined ? { description: spec.description } : {}),
        readOnly: spec.readOnly,
        allocationDepth: spec.allocationDepth,
        bitmaps: bitmaps[i]!,
      })),
      maxConnections: config.shared,
      handshakeTimeoutMs: config.handshakeLimit * 1000,
      ...(tls ? { tls } : {}),
      log,
      onConnectionEnd: ({ negotiated, active }) => {
        log('info', `client disconnected (${active} remaining)`);
        // qemu-nbd nbd_client_closed: without -t, the last negotiated client ends the server.
        if (negotiated && active === 0 && !config.persistent) finish('last client left');
      },
    });
    for (const a of addresses) {
      const bound = await server.listen(a);
      if (bound.kind === 'tcp') log('info', `listening on ${bound.host}:${bound.port}`);
      else if (bound.kind === 'unix') log('info', `listening on ${bound.path}`);
    }
    if (config.pidFile !== undefined) {
      await writePidFile(config.pidFile);
      pidWritten = true;
    }

    // Running: a forked child now detaches from the parent's stderr (qemu-nbd does the same).
    if (startup) {
      startup.ready();
      stderr = { write: () => true };
    }

    const signals = waitForSignal();
    let reason: string;
    try {
      reason = await Promise.race([
        finished,
        signals.promise,
        ...(hooks.stopSignal ? [hooks.stopSignal] : []),
      ]);
    } finally {
      signals.dispose();
    }
    log('info', `shutting down: ${reason}`);
    await server.close();
    return 0;
  } finally {
    if (server) await server.destroy();
    await closeDevices();
    if (pidWritten && config.pidFile !== undefined) await removePidFile(config.pidFile);
    // On failure the startup pipe stays open for the error message; exiting closes it.
  }
}

/** SIGTERM / SIGINT / SIGHUP: shut down cleanly (qemu-nbd exits 0 on SIGTERM). */
function waitForSignal(): { promise: Promise<string>; dispose: () => void } {
  const sigs: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
  let handler: (sig: NodeJS.Signals) => void = () => undefined;
  const promise = new Promise<string>((resolve) => {
    handler = (sig) => resolve(sig);
    for (const s of sigs) process.on(s, handler);
  });
  return { promise, dispose: () => sigs.forEach((s) => process.off(s, handler)) };
}
