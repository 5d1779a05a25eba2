// qemu-img amend as a library call (qemu-img.c img_amend): parse -o against the format's amend
// options (falling back to the create options only to say "This option is only supported for
// image creation"), open the image read-write with its backing chain, and run the qcow2 amend
// steps (src/qcow2/amend.ts). `-o help` lists QEMU 7.2's qcow2_amend_opts.

import {
  InvalidArgumentError,
  NotSupportedError,
  VmforgeError,
  throwIfAborted,
} from '../core/index.js';
import { openImage, isQcow2, type OpenImageOptions, type SupportedFormat } from '../image/open.js';
import { amendQcow2, type Qcow2AmendOptions } from '../qcow2/amend.js';
import type { Qcow2Device } from '../qcow2/qcow2-device.js';
import { appendOpts, optionHelp, QCOW2_CREATE_OPTS, QemuOpts, type OptDesc } from './qemu-opts.js';

const common = (name: string): OptDesc => QCOW2_CREATE_OPTS.find((d) => d.name === name)!;

/** block/qcow2.c qcow2_amend_opts: the LUKS key slot options, then QCOW_COMMON_OPTIONS. */
export const QCOW2_AMEND_OPTS: OptDesc[] = [
  {
    name: 'encrypt.state',
    type: 'string',
    help: 'Select new state of affected keyslots (active/inactive)',
  },
  { name: 'encrypt.keyslot', type: 'number', help: 'Select a single keyslot to modify explicitly' },
  {
    name: 'encrypt.old-secret',
    type: 'string',
    help: 'Select all keyslots that match this password',
  },
  {
    name: 'encrypt.new-secret',
    type: 'string',
    help: 'New secret to set in the matching keyslots. Empty string to erase',
  },
  { name: 'encrypt.iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
  ...[
    'size',
    'compat',
    'backing_file',
    'backing_fmt',
    'data_file',
    'data_file_raw',
    'lazy_refcounts',
    'refcount_bits',
  ].map(common),
];

/** print_amend_option_help(): the text `qemu-img amend -f FMT -o help` prints. */
export function amendOptionHelp(format: string): string {
  if (format === 'qcow2') {
    // qemu_opts_print_help(amend_opts, false): the lines without their caption.
    const lines = optionHelp('', QCOW2_AMEND_OPTS).slice(' options:\n'.length);
    return `Amend options for 'qcow2':\n${lines}`;
  }
  if (format === 'raw') {
    throw new NotSupportedError(`Format driver '${format}' does not support option amendment`);
  }
  throw new InvalidArgumentError(`Unknown file format '${format}'`);
}

export interface AmendRequest {
  filename: string;
  /** The -o text (comma-joined across repeated -o). */
  options: string;
  /** -f; probed when absent. */
  format?: SupportedFormat | undefined;
  /** --force: only meaningful for LUKS key slot changes, which vmforge refuses. */
  force?: boolean;
  /** -t: host cache mode of the image file. */
  cache?: OpenImageOptions['cache'];
  /** QEMU's status callback: work done and total work (qemu-img -p turns this into percent). */
  onProgress?: (offset: number, total: number) => void;
  onWarning?: (message: string) => void;
  /** Called once the options parsed, right before the amend starts (qemu-img prints 0% there). */
  onStart?: () => void;
  /** Stops at the next step boundary (the image stays consistent). */
  signal?: AbortSignal;
}

/** Parse -o against the amend options, with QEMU's messages. */
export function parseAmendOptions(text: string): Qcow2AmendOptions {
  const opts = new QemuOpts(QCOW2_AMEND_OPTS);
  try {
    opts.parse(text);
  } catch (err) {
    // "Try to parse options using the create options" only to add the hint.
    let createOnly = false;
    try {
      new QemuOpts(appendOpts(QCOW2_AMEND_OPTS, QCOW2_CREATE_OPTS)).parse(text);
      createOnly = true;
    } catch {
      /* the original error stands */
    }
    if (createOnly && err instanceof VmforgeError) {
      err.withHint('This option is only supported for image creation');
    }
    throw err;
  }
  const out: Qcow2AmendOptions = {};
  // In qcow2_amend_options' loop order (the option list order).
  for (const d of QCOW2_AMEND_OPTS) {
    if (!opts.has(d.name)) continue;
    const str = opts.str(d.name)!;
    if (d.name.startsWith('encrypt.')) out.encryption = true;
    else if (d.name === 'compat') {
      if (str === '0.10' || str === 'v2') out.version = 2;
      else if (str === '1.1' || str === 'v3') out.version = 3;
      else throw new InvalidArgumentError(`Unknown compatibility level ${str}`);
    } else if (d.name === 'size') {
      out.size = Number(BigInt.asIntN(64, opts.get('size')!.value as bigint));
    } else if (d.name === 'backing_file') out.backingFile = str;
    else if (d.name === 'backing_fmt') out.backingFormat = str;
    else if (d.name === 'lazy_refcounts') out.lazyRefcounts = opts.bool(d.name)!;
    else if (d.name === 'refcount_bits') {
      // int refcount_bits = qemu_opt_get_number(): a uint64 squeezed into an int.
      out.refcountBits = Number(BigInt.asIntN(32, opts.get(d.name)!.value as bigint));
    } else if (d.name === 'data_file') out.dataFile = str;
    else if (d.name === 'data_file_raw') out.dataFileRaw = opts.bool(d.name)!;
  }
  return out;
}

/** `qemu-img amend`: change the options of an existing image in place. */
export async function amendImage(req: AmendRequest): Promise<void> {
  const openOptions: OpenImageOptions = {
    readOnly: false,
    ...(req.format ? { format: req.format } : {}),
    ...(req.cache ? { cache: req.cache } : {}),
    ...(req.onWarning ? { onWarning: req.onWarning } : {}),
  };
  throwIfAborted(req.signal);
  const dev = await openImage(req.filename, openOptions);
  let current = dev;
  try {
    if (!isQcow2(dev)) {
      throw new NotSupportedError(
        `Format driver '${dev.format}' does not support option amendment`,
      );
    }
    const options = parseAmendOptions(req.options);
    if (options.size !== undefined && options.size < 0) {
      throw new InvalidArgumentError('Image size cannot be negative');
    }
    req.onStart?.();
    current = await amendQcow2(dev, options, {
      ...(req.onProgress ? { onStatus: req.onProgress } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
      reopen: async (d: Qcow2Device) => {
        await d.close();
        const again = await openImage(req.filename, openOptions);
        current = again;
        if (!isQcow2(again)) throw new Error('internal error: amended image is no longer qcow2');
        return again;
      },
    });
  } finally {
    await current.close();
  }
}
