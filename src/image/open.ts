// openImage(): open any supported image by name, as qemu-img does: a protocol URI (nbd://...)
// through its registered opener, otherwise a host file whose format is taken from -f, or from
// the backing_fmt recorded in the overlay, or probed. Backing chains are opened read-only, with
// loop detection and a depth limit (qemu-img 7.2 itself spins forever on a backing loop).

import { realpath, stat } from 'node:fs/promises';
import type { BlockDevice } from '../block/device.js';
import { FileStorage } from '../block/file-storage.js';
import type { ReserveAheadOptions } from '../block/reserve-ahead.js';
import type { Storage } from '../block/storage.js';
import {
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
  withContext,
} from '../core/index.js';
import { openQcow2, type BackingSpec, type Qcow2OpenOptions } from '../qcow2/open.js';
import type { Qcow2Device } from '../qcow2/qcow2-device.js';
import { RawDevice } from '../raw/raw-device.js';
import { LuksInfoDevice } from '../luks/luks-device.js';
import { probeFormat } from './probe.js';

export type SupportedFormat = 'raw' | 'qcow2';

export interface OpenImageOptions {
  /** Image format (-f). Probed when absent, as QEMU does. */
  format?: SupportedFormat | undefined;
  /** Open read-only (default true: pass false to write). */
  readOnly?: boolean;
  /** Whether to open the backing chain (default 'open'; qemu-img info uses 'none'). */
  backing?: 'open' | 'none';
  /** Inspection only: do not open external data files; accept encrypted images. */
  noIO?: boolean;
  /** Open for `check`: tolerate damage that a repair must be able to see. */
  checkMode?: boolean;
  /** Receives warnings QEMU would print (e.g. a probed raw image opened read-write). */
  onWarning?: (message: string) => void;
  /** Host cache behaviour of the image file (see FileStorage): 'unsafe' skips syncs. */
  cache?: 'writeback' | 'unsafe' | 'writethrough';
  /** Writes up to this size are synchronous (FileStorageOptions.syncWriteMax; batch tools). */
  syncWriteMax?: number;
  /** Reads up to this size try the page cache synchronously (FileStorageOptions.syncReadMax). */
  syncReadMax?: number;
  /** Reserve disk space ahead of sequential writes (FileStorageOptions.reserveAhead). */
  reserveAhead?: ReserveAheadOptions;
  /**
   * Devices to use for backing images instead of opening them again, keyed by real path (e.g.
   * a base opened read-write for qemu-img commit). The chain then owns them: closing the top
   * closes them.
   */
  backingDevices?: ReadonlyMap<string, BlockDevice>;
  /**
   * Repair hook for dirty (lazy refcounts) qcow2 images opened read-write. Defaults to QEMU's
   * automatic `check -r all` (dirtyImageRepair), whose lines go to `onWarning`.
   */
  repairDirty?: Qcow2OpenOptions['repairDirty'];
}

/** Opens a protocol URI (registered by src/nbd for nbd://, nbd+unix://, ...). */
export type ProtocolOpener = (uri: string, options: OpenImageOptions) => Promise<BlockDevice>;

const protocols = new Map<string, ProtocolOpener>();

export function registerProtocol(scheme: string, opener: ProtocolOpener): void {
  protocols.set(scheme, opener);
}

function protocolOf(filename: string): string | undefined {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(filename);
  return m ? m[1]!.toLowerCase() : undefined;
}

export function isProtocolUri(filename: string): boolean {
  return protocolOf(filename) !== undefined;
}

const MAX_CHAIN_DEPTH = 1024;

/**
 * Open `filename`. Errors carry QEMU's wording, e.g.
 * "Could not open 'top.qcow2': Could not open backing file: Could not open 'base': No such file or directory".
 */
export async function openImage(
  filename: string,
  options: OpenImageOptions = {},
): Promise<BlockDevice> {
  try {
    return await openImageNoContext(filename, options);
  } catch (err) {
    throw withContext(err, `Could not open '${filename}'`);
  }
}

/**
 * openImage() without the outer "Could not open '<name>': " context, for callers that report
 * errors the way bdrv_open() does (e.g. qemu-img create checking a backing file).
 */
export function openImageNoContext(
  filename: string,
  options: OpenImageOptions = {},
): Promise<BlockDevice> {
  return openInChain(filename, options, [], options.format);
}

async function openInChain(
  filename: string,
  options: OpenImageOptions,
  chain: string[],
  format: string | undefined,
): Promise<BlockDevice> {
  const scheme = protocolOf(filename);
  if (scheme) {
    const opener = protocols.get(scheme);
    if (!opener) throw new NotSupportedError(`Unknown protocol '${scheme}'`);
    return opener(filename, {
      ...options,
      ...(format ? { format: format as SupportedFormat } : {}),
    });
  }

  if (chain.length > 0 && options.backingDevices) {
    const real = await realpath(filename).catch(() => filename);
    const given = options.backingDevices.get(real);
    if (given) return given;
  }
  const readOnly = options.readOnly ?? true;
  const storage = await openFile(filename, readOnly, options);
  try {
    // Loop detection on the real path (symlinks and ./ spellings included).
    const real = await realpath(filename).catch(() => filename);
    if (chain.includes(real)) {
      throw new CorruptImageError(`Backing file '${filename}' creates an infinite loop.`, {
        code: 'VMF_BACKING_LOOP',
      });
    }
    if (chain.length >= MAX_CHAIN_DEPTH) {
      throw new CorruptImageError(`Backing chain is deeper than ${MAX_CHAIN_DEPTH} images`);
    }
    const fmt = format ?? (await probe(storage, filename));
    if (format === undefined && fmt === 'raw' && !readOnly) {
      options.onWarning?.(
        `WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
          '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
          "         Specify the 'raw' format explicitly to remove the restrictions.",
      );
    }
    if (fmt === 'raw') return await RawDevice.open(storage, { filename });
    if (fmt === 'luks') {
      // Without a key QEMU can only inspect LUKS images (BDRV_O_NO_IO), and so can vmforge.
      if (!options.noIO)
        throw new InvalidArgumentError("Parameter 'key-secret' is required for cipher");
      return await LuksInfoDevice.open(storage, filename);
    }
    if (fmt === 'qcow2') {
      return await openQcow2(storage, {
        filename,
        readOnly,
        ...(options.noIO !== undefined ? { noIO: options.noIO } : {}),
        ...(options.checkMode !== undefined ? { checkMode: options.checkMode } : {}),
        // A dirty lazy-refcounts image opened read-write gets QEMU's automatic `check -r all`.
        // (qcow2 check is loaded only when an image needs it: it is a dozen modules of start-up.)
        repairDirty:
          options.repairDirty ??
          (async (dev) => {
            const { dirtyImageRepair } = await import('../qcow2/check/index.js');
            await dirtyImageRepair((m) => options.onWarning?.(m.text))(dev);
          }),
        openDataFile: (path, ro) => openFile(path, ro, options),
        ...(options.backing === 'none'
          ? {}
          : {
              openBacking: async (spec: BackingSpec) => {
                try {
                  return await openInChain(
                    spec.fullName,
                    { ...options, readOnly: true, checkMode: false },
                    [...chain, real],
                    spec.format,
                  );
                } catch (err) {
                  throw withContext(err, 'Could not open backing file');
                }
              },
            }),
      });
    }
    throw new NotSupportedError(
      `Image format '${fmt}' is not supported by vmforge (supported: raw, qcow2)`,
      {
        code: 'VMF_UNSUPPORTED_FORMAT',
      },
    );
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw err;
  }
}

async function openFile(
  path: string,
  readOnly: boolean,
  {
    cache,
    syncWriteMax,
    syncReadMax,
    reserveAhead,
  }: Pick<OpenImageOptions, 'cache' | 'syncWriteMax' | 'syncReadMax' | 'reserveAhead'>,
): Promise<Storage> {
  let st;
  try {
    st = await stat(path);
  } catch {
    st = undefined; // FileStorage.open reports the error with QEMU's wording
  }
  if (st?.isDirectory()) {
    throw new InvalidArgumentError(`'file' driver requires '${path}' to be a regular file`);
  }
  return FileStorage.open(path, {
    readOnly,
    ...(cache ? { cache } : {}),
    ...(syncWriteMax !== undefined ? { syncWriteMax } : {}),
    ...(syncReadMax !== undefined ? { syncReadMax } : {}),
    ...(reserveAhead ? { reserveAhead } : {}),
  });
}

async function probe(storage: Storage, filename: string): Promise<string> {
  const size = await storage.size();
  const head = new Uint8Array(Math.min(512, size));
  await storage.read(head, 0);
  return probeFormat(head, size, filename);
}

/** Narrowing helper for callers that need qcow2 internals (check, info). */
export function isQcow2(dev: BlockDevice): dev is Qcow2Device {
  return dev.format === 'qcow2';
}
