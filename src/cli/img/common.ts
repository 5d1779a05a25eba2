// Shared pieces of the qemu-img compatible commands: option parsing with qemu-img's messages,
// and writing QEMU byte strings to the terminal.
import {
  encodeByteString,
  parseSize,
  type VmforgeError,
  isVmforgeError,
} from '../../core/index.js';
import type { SupportedFormat } from '../../image/open.js';
import { CliExit, usageError, type OutputStream } from '../io.js';
import type { ToolContext } from '../program.js';

export type OutputFormat = 'human' | 'json';

/** --output=human|json (qemu-img.c: "--output must be used with human or json as argument."). */
export function parseOutput(value: string | undefined): OutputFormat {
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  throw new CliExit(1, '--output must be used with human or json as argument.');
}

/** -f FMT: vmforge opens raw and qcow2; other names fail at open time like QEMU's "Unknown driver". */
export function formatOption(value: string | undefined): SupportedFormat | undefined {
  if (value === undefined) return undefined;
  if (value === 'raw' || value === 'qcow2') return value;
  return value as SupportedFormat; // openImage reports the unsupported format by name
}

/** Exactly one image file name ("Expecting one image file name"). */
export function oneFilename(args: string[]): string {
  if (args.length !== 1) throw usageError('Expecting one image file name');
  return args[0]!;
}

/** --object / --image-opts need QEMU's object model; say so instead of ignoring them. */
export function rejectUnsupported(opts: Record<string, unknown>): void {
  if (opts['object'] !== undefined) {
    throw new CliExit(1, '--object is not supported by vmforge (no secrets or other QEMU objects)');
  }
  if (opts['imageOpts']) throw new CliExit(1, '--image-opts is not supported by vmforge');
}

/** cvtnum(): a size argument with qemu-img's two-line message on error. */
export function cvtnum(name: string, text: string): number {
  try {
    return parseSize(text, name);
  } catch (err) {
    if (isVmforgeError(err))
      throw new CliExit(1, (err as VmforgeError).message.replace('\n', '\nvmforge-img: '));
    throw err;
  }
}

/** Write text that may carry escaped image bytes (core/byte-string) byte-exactly. */
export function writeBytes(out: OutputStream, text: string): void {
  out.write(encodeByteString(text));
}

export type { ToolContext };
