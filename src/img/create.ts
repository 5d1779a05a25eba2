// qemu-img create as a library call: -o option text (and -b/-F/-u/size) in, the "Formatting"
// echo and a new image out, with bdrv_img_create()'s checks, order and messages.

import { InvalidArgumentError, NotSupportedError, VmforgeError } from '../core/index.js';
import { createImage, type CreateImageOptions } from '../image/create.js';
import { openImageNoContext, type SupportedFormat } from '../image/open.js';
import { resolveRelativeTo } from '../qcow2/open.js';
import type { PreallocMode } from '../block/preallocate.js';
import {
  appendOpts,
  FILE_CREATE_OPTS,
  QCOW2_CREATE_OPTS,
  QemuOpts,
  RAW_CREATE_OPTS,
  type OptDesc,
} from './qemu-opts.js';

/** Format options (for -o help) and the option list create parses (format + file protocol). */
export function createOptionLists(
  format: string,
): { format: OptDesc[]; all: OptDesc[] } | undefined {
  if (format === 'qcow2')
    return { format: QCOW2_CREATE_OPTS, all: appendOpts(QCOW2_CREATE_OPTS, FILE_CREATE_OPTS) };
  if (format === 'raw')
    return { format: RAW_CREATE_OPTS, all: appendOpts(RAW_CREATE_OPTS, FILE_CREATE_OPTS) };
  return undefined;
}

export interface CreateRequest {
  filename: string;
  format: string;
  /** -o text, comma-joined across repeated -o. */
  options?: string | undefined;
  /** -b */
  backingFile?: string | undefined;
  /** -F */
  backingFormat?: string | undefined;
  /** -u: do not open the backing file. */
  unsafe?: boolean;
  /** The size argument, already parsed by cvtnum. */
  size?: number | undefined;
  /** Receives the "Formatting '...', fmt=... ..." line (without newline) before creating. */
  onFormatting?: ((line: string) => void) | undefined;
}

function enumValue<T extends string>(param: string, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new InvalidArgumentError(`Parameter '${param}' does not accept value '${value}'`);
}

/** Translate parsed QemuOpts into typed create options (qcow2_co_create_opts' QAPI step). */
export function toCreateOptions(
  format: SupportedFormat,
  opts: QemuOpts,
  size: number,
): CreateImageOptions {
  for (const name of ['nocow', 'extent_size_hint']) {
    if (opts.has(name))
      throw new NotSupportedError(`The '${name}' option is not supported by vmforge`);
  }
  const out: CreateImageOptions = { format, size };
  const prealloc = opts.str('preallocation');
  if (prealloc !== undefined) {
    out.preallocation = enumValue<PreallocMode>('preallocation', prealloc, [
      'off',
      'metadata',
      'falloc',
      'full',
    ]);
  }
  if (format === 'raw') return out;

  if (
    opts.has('encryption') ||
    opts.list.some((d) => d.name.startsWith('encrypt.') && opts.has(d.name))
  ) {
    throw new NotSupportedError('vmforge does not create encrypted images (use qemu-img for LUKS)');
  }
  const compat = opts.str('compat');
  if (compat !== undefined) {
    const v = enumValue('version', compat === '0.10' ? 'v2' : compat === '1.1' ? 'v3' : compat, [
      'v2',
      'v3',
    ]);
    out.version = v === 'v2' ? 2 : 3;
  }
  const cs = opts.num('cluster_size');
  if (cs !== undefined) out.clusterSize = cs;
  const rb = opts.num('refcount_bits');
  if (rb !== undefined) out.refcountBits = rb;
  const ct = opts.str('compression_type');
  if (ct !== undefined) out.compressionType = enumValue('compression-type', ct, ['zlib', 'zstd']);
  const bools: [string, keyof CreateImageOptions][] = [
    ['extended_l2', 'extendedL2'],
    ['lazy_refcounts', 'lazyRefcounts'],
    ['data_file_raw', 'dataFileRaw'],
  ];
  for (const [name, key] of bools) {
    const v = opts.bool(name);
    if (v !== undefined) (out as Record<string, unknown>)[key] = v;
  }
  const bf = opts.str('backing_file');
  if (bf !== undefined) out.backingFile = bf;
  const bfmt = opts.str('backing_fmt');
  if (bfmt !== undefined) out.backingFormat = bfmt;
  const df = opts.str('data_file');
  if (df !== undefined) out.dataFile = df;
  return out;
}

/** bdrv_img_create(). Throws with QEMU's messages; the CLI prefixes "<filename>: ". */
export async function createFromRequest(req: CreateRequest): Promise<void> {
  const lists = createOptionLists(req.format);
  if (!lists) throw new InvalidArgumentError(`Unknown file format '${req.format}'`);
  const format = req.format as SupportedFormat;
  const opts = new QemuOpts(lists.all);
  if (req.options) opts.parse(req.options);
  if (!opts.has('size')) {
    if (req.size !== undefined) opts.set('size', String(req.size));
  } else if (req.size !== undefined) {
    throw new InvalidArgumentError('The image size must be specified only once');
  }
  if (req.backingFile !== undefined) {
    if (format === 'raw')
      throw new InvalidArgumentError(`Backing file not supported for file format '${format}'`);
    opts.set('backing_file', req.backingFile);
  }
  if (req.backingFormat !== undefined) {
    if (format === 'raw') {
      throw new InvalidArgumentError(
        `Backing file format not supported for file format '${format}'`,
      );
    }
    opts.set('backing_fmt', req.backingFormat);
  }
  const backingFile = opts.str('backing_file');
  if (backingFile !== undefined) {
    if (backingFile === req.filename) {
      throw new InvalidArgumentError(
        'Error: Trying to create an image with the same filename as the backing file',
      );
    }
    if (backingFile === '')
      throw new InvalidArgumentError('Expected backing file name, got empty string');
  }
  let size = opts.num('size');
  const backingFormat = opts.str('backing_fmt');
  if (backingFile !== undefined && !req.unsafe) {
    const probed = await probeBacking(req.filename, backingFile, backingFormat);
    if (backingFormat === undefined) {
      throw new InvalidArgumentError(
        `Backing file specified without backing format\nDetected format of ${probed.format}.`,
      );
    }
    if (size === undefined) {
      size = probed.size;
      opts.set('size', String(size));
    }
  } else if (backingFile !== undefined && backingFormat === undefined) {
    throw new InvalidArgumentError('Backing file specified without backing format');
  }
  if (size === undefined) throw new InvalidArgumentError('Image creation needs a size parameter');

  req.onFormatting?.(`Formatting '${req.filename}', fmt=${req.format} ${opts.print()}`);
  const options = toCreateOptions(format, opts, size);
  // The backing file was checked above; createImage need not open it again.
  await createImage(req.filename, { ...options, unsafe: true });
}

/** Open the backing image without I/O (as bdrv_img_create does) for its format and size. */
async function probeBacking(
  filename: string,
  backingFile: string,
  backingFormat: string | undefined,
): Promise<{ format: string; size: number }> {
  let dev;
  try {
    dev = await openImageNoContext(resolveRelativeTo(filename, backingFile), {
      ...(backingFormat !== undefined ? { format: backingFormat as SupportedFormat } : {}),
      readOnly: true,
      backing: 'none',
      noIO: true,
    });
  } catch (err) {
    if (err instanceof VmforgeError) throw err.withHint('Could not open backing image.');
    throw err;
  }
  try {
    return { format: dev.format, size: dev.size };
  } finally {
    await dev.close();
  }
}
