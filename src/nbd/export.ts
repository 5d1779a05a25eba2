// What the server exports: a BlockDevice under a name, with the per-export settings a client can
// observe (read-only, description, which metadata contexts exist).

import type { BlockDevice } from '../block/device.js';
import { InvalidArgumentError } from '../core/index.js';
import { checkExportBitmap, type NbdExportBitmap } from './export-bitmaps.js';
import { NBD_MAX_STRING_SIZE } from './protocol.js';

export interface NbdExportOptions {
  /** The device to serve. Any BlockDevice: raw, qcow2, an overlay, an NBD client. */
  device: BlockDevice;
  /** Export name (qemu-nbd -x). @default '' (the default export) */
  name?: string;
  /** Human-readable description sent in NBD_INFO_DESCRIPTION and NBD_REP_SERVER (-D). */
  description?: string;
  /** Refuse writes (qemu-nbd -r). @default the device's own read-only capability */
  readOnly?: boolean;
  /** Offer the qemu:allocation-depth metadata context (qemu-nbd -A). @default false */
  allocationDepth?: boolean;
  /**
   * Dirty bitmaps offered as "qemu:dirty-bitmap:NAME" contexts (qemu-nbd -B), in context-id
   * order. Find them with findExportBitmaps(); an inconsistent bitmap, or an enabled one of a
   * writable image on a read-only export, is refused as qemu refuses it. @default []
   */
  bitmaps?: readonly NbdExportBitmap[];
}

export interface NbdExport {
  readonly name: string;
  readonly description: string | undefined;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly allocationDepth: boolean;
  readonly bitmaps: readonly NbdExportBitmap[];
}

const encoder = new TextEncoder();

export function normalizeExport(options: NbdExportOptions): NbdExport {
  const name = options.name ?? '';
  if (encoder.encode(name).length > NBD_MAX_STRING_SIZE) {
    throw new InvalidArgumentError(`export name '${name}' too long`);
  }
  const description = options.description;
  if (description !== undefined && encoder.encode(description).length > NBD_MAX_STRING_SIZE) {
    throw new InvalidArgumentError(`export description '${description}' too long`);
  }
  if (!Number.isSafeInteger(options.device.size) || options.device.size < 0) {
    throw new InvalidArgumentError(`export '${name}': invalid device size ${options.device.size}`);
  }
  const readOnly = (options.readOnly ?? false) || options.device.capabilities.readOnly;
  const bitmaps = options.bitmaps ?? [];
  for (const bitmap of bitmaps) checkExportBitmap(bitmap, readOnly);
  return {
    name,
    description,
    device: options.device,
    readOnly,
    allocationDepth: options.allocationDepth ?? false,
    bitmaps,
  };
}

/** Build the name → export table, refusing duplicates (qemu: "already has export named"). */
export function exportTable(list: readonly NbdExportOptions[]): Map<string, NbdExport> {
  const table = new Map<string, NbdExport>();
  for (const options of list) {
    const exp = normalizeExport(options);
    if (table.has(exp.name)) {
      throw new InvalidArgumentError(`NBD server already has export named '${exp.name}'`);
    }
    table.set(exp.name, exp);
  }
  return table;
}
