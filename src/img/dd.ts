// qemu-img dd as a library call (qemu-img.c img_dd): create an output image as large as the
// selected part of the input and copy that part into it. Sizes follow QEMU's int64 arithmetic,
// including its quirks: `count` shortens the input before `skip` is applied, and a skip past
// the end gives an empty output image plus a warning (exit status 0), like dd(1).
//
// Every byte of the range is written, zeros included, as qemu-img does (no detect-zeroes), so the
// output's allocation and size on disk match qemu-img's. The copy goes in large chunks: block
// boundaries (bs) only matter for the sizes, not for the bytes written.

import { realpath } from 'node:fs/promises';
import type { BlockDevice } from '../block/device.js';
import {
  EnvironmentError,
  InvalidArgumentError,
  NotSupportedError,
  VmforgeError,
  throwIfAborted,
} from '../core/index.js';
import { createImage } from '../image/create.js';
import { openImage, type SupportedFormat } from '../image/open.js';
import { QEMU_CREATABLE_DRIVERS, QEMU_NON_CREATABLE_DRIVERS } from './qemu-drivers.js';
import { qemuLength, readQemu } from './qemu-block-status.js';

const INT64_MAX = 0x7fff_ffff_ffff_ffffn;
/** Bytes copied per read/write. */
const COPY_CHUNK = 4 * 1024 * 1024;

export interface DdOptions {
  /** if=FILE */
  input: string;
  /** of=FILE (created, or replaced) */
  output: string;
  /** -f: input format (probed when absent). */
  inputFormat?: SupportedFormat | undefined;
  /** -O: output format. @default 'raw' */
  outputFormat?: string | undefined;
  /** bs=BYTES, 1..INT_MAX. @default 512 */
  blockSize?: number;
  /** count=N blocks to copy (all when absent). */
  count?: bigint | number | undefined;
  /** skip=N blocks of the input. */
  skip?: bigint | number | undefined;
  signal?: AbortSignal;
  /** Bytes copied so far, after each chunk. */
  onProgress?: (copied: number, total: number) => void;
  /**
   * Messages qemu-img prints without failing ("<input>: cannot skip to specified offset").
   */
  onWarning?: (message: string) => void;
}

export interface DdResult {
  /** The output image's virtual size. */
  outputSize: number;
  /** Bytes copied. */
  copied: number;
}

/** A read or write of the copy loop failed (qemu-img prints the message, exit status 1). */
export class DdIoError extends VmforgeError {
  override name = 'DdIoError';
  readonly direction: 'read' | 'write';
  constructor(direction: 'read' | 'write', cause: unknown) {
    super(
      'data',
      direction === 'read' ? 'VMF_DD_READ' : 'VMF_DD_WRITE',
      direction === 'read'
        ? 'error while reading from input image file'
        : 'error while writing to output image file',
      { cause },
    );
    this.direction = direction;
  }
}

/** Known QEMU protocol prefixes (bdrv_find_protocol); other "x:" prefixes are unknown. */
const QEMU_PROTOCOLS = new Set([
  'file',
  'host_device',
  'host_cdrom',
  'nbd',
  'nbd+unix',
  'nbd+tcp',
  'http',
  'https',
  'ftp',
  'ftps',
  'gluster',
  'gluster+tcp',
  'gluster+unix',
  'gluster+rdma',
  'iscsi',
  'iser',
  'nfs',
  'ssh',
  'rbd',
  'nvme',
  'vvfat',
  'null-co',
  'null-aio',
  'blkdebug',
  'blkverify',
  'json',
]);

/** path_has_protocol(): a ':' before any '/'. */
function protocolPrefix(filename: string): string | undefined {
  const m = /^([^:/]*):/.exec(filename);
  return m ? m[1] : undefined;
}

/** The target format's checks in img_dd's order (after the input was opened). */
function checkOutputTarget(format: string, output: string): void {
  if (!QEMU_CREATABLE_DRIVERS.has(format) && !QEMU_NON_CREATABLE_DRIVERS.has(format)) {
    throw new InvalidArgumentError('Unknown file format');
  }
  const proto = protocolPrefix(output);
  if (proto !== undefined && !QEMU_PROTOCOLS.has(proto)) {
    throw new InvalidArgumentError(`Unknown protocol '${proto}'`);
  }
  if (QEMU_NON_CREATABLE_DRIVERS.has(format)) {
    throw new InvalidArgumentError(`Format driver '${format}' does not support image creation`);
  }
  if (format !== 'raw' && format !== 'qcow2') {
    throw new NotSupportedError(
      `Output format '${format}' is not supported by vmforge (supported: raw, qcow2)`,
    );
  }
  if (proto !== undefined && proto !== 'file') {
    throw new NotSupportedError(`vmforge-img dd writes to files only, not to '${proto}:' targets`);
  }
}

/** Real paths of every file of an open image chain (the files QEMU would hold locks on). */
async function chainPaths(dev: BlockDevice): Promise<Set<string>> {
  const out = new Set<string>();
  for (let d: BlockDevice | undefined = dev; d; d = d.backing) {
    out.add(await realpath(d.storage.filename).catch(() => d!.storage.filename));
  }
  return out;
}

/**
 * The sizes img_dd() derives: the output size and the input range to copy, or a skip past the
 * end (`skipPastEnd`: output size 0, nothing copied, qemu-img warns).
 */
export function ddExtent(
  inputLength: number,
  blockSize: number,
  count: bigint | undefined,
  skip: bigint | undefined,
): { outputSize: number; from: number; to: number; skipPastEnd: boolean } {
  const bs = BigInt(blockSize);
  let size = BigInt(inputLength);
  if (count !== undefined && count <= INT64_MAX / bs && count * bs < size) size = count * bs;
  const offset = skip ?? 0n;
  const past = skip !== undefined && (offset > INT64_MAX / bs || size < bs * offset);
  const to = Number(size);
  if (past) return { outputSize: 0, from: to, to, skipPastEnd: true };
  const from = Number(bs * offset);
  return { outputSize: to - from, from, to, skipPastEnd: false };
}

/** `qemu-img dd`: returns what was written; throws with qemu-img's messages. */
export async function ddImage(options: DdOptions): Promise<DdResult> {
  const blockSize = options.blockSize ?? 512;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 0x7fff_ffff) {
    throw new InvalidArgumentError('Invalid bs specified. Must be between 1 and 2147483647.');
  }
  const count = options.count === undefined ? undefined : BigInt(options.count);
  const skip = options.skip === undefined ? undefined : BigInt(options.skip);
  for (const [name, v] of [
    ['count', count],
    ['skip', skip],
  ] as const) {
    if (v !== undefined && (v < 0n || v > INT64_MAX)) {
      throw new InvalidArgumentError(
        `Invalid ${name} specified. Must be between 0 and 9223372036854775807.`,
      );
    }
  }
  const outputFormat = options.outputFormat ?? 'raw';

  const input = await openImage(options.input, { format: options.inputFormat, readOnly: true });
  let output: BlockDevice | undefined;
  try {
    checkOutputTarget(outputFormat, options.output);
    const extent = ddExtent(qemuLength(input), blockSize, count, skip);

    // QEMU's image locks stop it from recreating a file it is reading; vmforge holds no locks,
    // so it checks the paths instead (qemu-img 7.2 truncates a raw input given as output).
    const outReal = await realpath(options.output).catch(() => undefined);
    if (outReal !== undefined && (await chainPaths(input)).has(outReal)) {
      throw new EnvironmentError(
        `${options.output}: error while creating output image: Failed to get "write" lock\nIs another process using the image [${options.output}]?`,
        { code: 'VMF_IMAGE_IN_USE' },
      );
    }
    try {
      await createImage(options.output, {
        format: outputFormat as SupportedFormat,
        size: extent.outputSize,
      });
    } catch (err) {
      if (err instanceof VmforgeError) {
        err.message = `${options.output}: error while creating output image: ${err.message}`;
      }
      throw err;
    }
    output = await openImage(options.output, {
      format: outputFormat as SupportedFormat,
      readOnly: false,
    });
    if (extent.skipPastEnd) {
      options.onWarning?.(`${options.input}: cannot skip to specified offset`);
    }
    const copied = await copyRange(input, output, extent.from, extent.to, blockSize, options);
    await output.flush();
    return { outputSize: extent.outputSize, copied };
  } finally {
    await output?.close().catch(() => undefined);
    await input.close().catch(() => undefined);
  }
}

/** Copy input[from, to) to output[0, ...), in order; a failed read copies the blocks before it. */
async function copyRange(
  input: BlockDevice,
  output: BlockDevice,
  from: number,
  to: number,
  blockSize: number,
  options: DdOptions,
): Promise<number> {
  const total = to - from;
  // Whole blocks per chunk, so a failing read is located on QEMU's block boundaries.
  const chunkSize =
    blockSize <= COPY_CHUNK ? Math.floor(COPY_CHUNK / blockSize) * blockSize : COPY_CHUNK;
  const buf = new Uint8Array(Math.min(chunkSize, Math.max(total, 0)));
  let inPos = from;
  let outPos = 0;
  const write = async (data: Uint8Array): Promise<void> => {
    try {
      await output.write(data, outPos);
    } catch (err) {
      throw new DdIoError('write', err);
    }
    outPos += data.length;
  };
  while (inPos < to) {
    throwIfAborted(options.signal);
    const n = Math.min(buf.length, to - inPos);
    const chunk = buf.subarray(0, n);
    try {
      await readQemu(input, chunk, inPos);
      await write(chunk);
    } catch (err) {
      if (err instanceof DdIoError) throw err;
      // QEMU reads one block at a time: the blocks before a failing one reach the output.
      for (let pos = inPos; pos < inPos + n; pos += blockSize) {
        const block = chunk.subarray(pos - inPos, Math.min(n, pos - inPos + blockSize));
        try {
          await readQemu(input, block, pos);
        } catch (blockErr) {
          throw new DdIoError('read', blockErr);
        }
        await write(block);
      }
    }
    inPos += n;
    options.onProgress?.(outPos, total);
  }
  return outPos;
}
