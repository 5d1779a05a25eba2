// qemu-img map: walk the allocation status of an image (and its backing chain) and produce the
// entries img_map() prints, merged with QEMU's entry_mergeable() rules. For the human format
// QEMU also folds "zero" and "unallocated" runs together before merging (dump_map_entry), so the
// caller says which output the entries are for.

import type { BlockDevice } from '../block/device.js';
import { throwIfAborted } from '../core/index.js';
import type { MapEntry } from './qapi-types.js';

export interface MapOptions {
  startOffset?: number;
  maxLength?: number;
  /** Entries for `qemu-img map --output=human` (folds zero kinds as QEMU does) or json. */
  output?: 'human' | 'json';
  signal?: AbortSignal;
}

/** One get_block_status() answer. */
async function blockStatusEntry(
  dev: BlockDevice,
  offset: number,
  length: number,
): Promise<MapEntry> {
  const [e] = await dev.blockStatus(offset, length, { maxExtents: 1 });
  if (!e) throw new Error(`internal error: no block status at ${offset}`);
  const entry: MapEntry = {
    start: offset,
    length: e.length,
    data: e.data,
    zero: e.zero,
    depth: e.depth,
    present: e.allocated,
  };
  if (e.hostOffset !== undefined) {
    entry.offset = e.hostOffset;
    if (e.file !== undefined) entry.filename = e.file;
  }
  return entry;
}

function mergeable(curr: MapEntry, next: MapEntry): boolean {
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

/** The entries img_map() would pass to dump_map_entry(), in order. */
export async function* mapImage(
  dev: BlockDevice,
  options: MapOptions = {},
): AsyncGenerator<MapEntry> {
  const start = options.startOffset ?? 0;
  let length = dev.size;
  if (options.maxLength !== undefined) length = Math.min(start + options.maxLength, length);
  let curr: MapEntry = { start, length: 0, data: false, zero: false, depth: 0, present: false };
  while (curr.start + curr.length < length) {
    throwIfAborted(options.signal);
    const offset = curr.start + curr.length;
    const next = await blockStatusEntry(dev, offset, length - offset);
    if (mergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0) {
      yield curr;
      // "This format ignores the distinction between 0, ZERO and ZERO|DATA."
      if (options.output === 'human' && (!next.data || next.zero)) {
        next.data = false;
        next.zero = true;
      }
    }
    curr = next;
  }
  yield curr; // QEMU always dumps the last entry, even an empty one past the end
}
