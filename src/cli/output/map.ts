// `qemu-img map` output (QEMU 7.2 qemu-img.c img_map / dump_map_entry). Both formats are
// printed by hand with printf, not through QAPI.
//
// The caller produces the entries: it walks [start, end) with block status, one MapEntry per
// extent (get_block_status: depth = how many backing files down the data was found; offset
// only with BDRV_BLOCK_OFFSET_VALID; filename = the file holding `offset`), and merges each new
// extent into the previous one when mapEntriesMergeable() says so. Pass the merged entries
// here. One merge serves both formats: human output additionally folds "zero or no data" flags
// before merging (dump_map_entry), but that only changes how entries it never prints are
// grouped, so the printed rows come out the same.

import { NotSupportedError } from '../../core/errors.js';
import { printfHexAlt, printfPad } from '../../core/printf.js';
import type { MapEntry } from '../../img/qapi-types.js';
import { formatQNum } from './qobject-json.js';

export type MapOutputFormat = 'human' | 'json';

/** entry_mergeable(): may `next` be appended to `curr`? */
export function mapEntriesMergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (
    curr.zero !== next.zero ||
    curr.data !== next.data ||
    curr.depth !== next.depth ||
    curr.present !== next.present ||
    (curr.filename !== undefined) !== (next.filename !== undefined) ||
    (curr.offset !== undefined) !== (next.offset !== undefined)
  ) {
    return false;
  }
  if (curr.filename !== undefined && curr.filename !== next.filename) return false;
  if (curr.offset !== undefined && curr.offset + curr.length !== next.offset) return false;
  return true;
}

/** The message human `map` fails with when data has no host offset; exit status 1. */
export const MAP_HUMAN_UNMAPPABLE = 'File contains external, encrypted or compressed clusters.';

/** Thrown by MapPrinter in human mode for data without an offset (compressed, encrypted...). */
export class MapNotRepresentableError extends NotSupportedError {
  override name = 'MapNotRepresentableError';
  constructor() {
    super(MAP_HUMAN_UNMAPPABLE, { code: 'VMF_MAP_NOT_REPRESENTABLE' });
  }
}

/** One JSON entry, 7.2 style (no "compressed", no "filename"), without separator. */
export function mapJsonEntry(e: MapEntry): string {
  let s =
    `{ "start": ${formatQNum(e.start)}, "length": ${formatQNum(e.length)}, ` +
    `"depth": ${formatQNum(e.depth)}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== undefined) s += `, "offset": ${formatQNum(e.offset)}`;
  return `${s}}`;
}

/** The human header line. */
export const MAP_HUMAN_HEADER = 'Offset          Length          Mapped to       File\n';

/**
 * Streams map output: begin(), entry() for each merged entry, end(); concatenate what they
 * return. In human mode entry() throws MapNotRepresentableError where qemu-img stops with an
 * error (what was returned before stays printed, as with qemu-img).
 */
export class MapPrinter {
  readonly #format: MapOutputFormat;
  readonly #startOffset: number;
  #count = 0;

  /** `startOffset` is --start-offset; it only shows when there is nothing to map. */
  constructor(format: MapOutputFormat, startOffset = 0) {
    this.#format = format;
    this.#startOffset = startOffset;
  }

  begin(): string {
    return this.#format === 'json' ? '[' : MAP_HUMAN_HEADER;
  }

  entry(e: MapEntry): string {
    const first = this.#count === 0;
    this.#count++;
    if (this.#format === 'json') return (first ? '' : ',\n') + mapJsonEntry(e);
    // dump_map_entry sets data=false, zero=true on every entry after the first that has no
    // data or reads as zero, so the "no offset" error only fires for those it leaves alone.
    const folded = !first && (!e.data || e.zero);
    if (e.data && e.offset === undefined && !folded) throw new MapNotRepresentableError();
    if (!e.data || e.zero) return '';
    const file = e.filename ?? '';
    return (
      printfPad(printfHexAlt(e.start), 16, true) +
      printfPad(printfHexAlt(e.length), 16, true) +
      printfPad(printfHexAlt(e.offset ?? 0), 16, true) +
      `${file}\n`
    );
  }

  /**
   * Closes the output. With no entries at all (an empty image, or --start-offset at or past the
   * end) qemu-img still dumps its initial zero-length entry: JSON gets
   * `{ "start": <start-offset>, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}`.
   */
  end(): string {
    if (this.#format === 'human') return '';
    const placeholder =
      this.#count === 0
        ? mapJsonEntry({
            start: this.#startOffset,
            length: 0,
            depth: 0,
            present: false,
            zero: false,
            data: false,
          })
        : '';
    return `${placeholder}]\n`;
  }
}

/** Whole map output at once; `error` is set (and `text` holds what came before) on failure. */
export function formatMap(
  entries: readonly MapEntry[],
  format: MapOutputFormat,
  startOffset = 0,
): { text: string; error?: string } {
  const p = new MapPrinter(format, startOffset);
  let text = p.begin();
  try {
    for (const e of entries) text += p.entry(e);
  } catch (err) {
    if (err instanceof MapNotRepresentableError) return { text, error: err.message };
    throw err;
  }
  return { text: text + p.end() };
}
