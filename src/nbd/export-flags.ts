// Transmission flags and block sizes for an export, computed in one place from the export's
// settings and its device's capabilities, the way qemu-nbd does (nbd/server.c
// nbd_export_create + nbd_negotiate_handle_info), so `nbdinfo` shows the same answers.

import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
} from './protocol.js';
import type { NbdExport } from './export.js';
import type { BlockSizes } from './wire.js';

export interface FlagContext {
  /** Structured replies were negotiated on this connection (enables DF). */
  structured: boolean;
  /**
   * The server allows more than one client (qemu-nbd: `-e` other than 1). qemu advertises
   * CAN_MULTI_CONN exactly then, whatever the format: every connection goes through the one
   * device object (one cache, one file handle), so a flush on any connection covers all of them.
   */
  multipleClients: boolean;
}

export function transmissionFlags(exp: NbdExport, ctx: FlagContext): number {
  // FLUSH, FUA and CACHE are always offered: FUA maps to a flush after the write, CACHE to a
  // prefetch read, so every device supports them.
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
  if (ctx.multipleClients) flags |= NBD_FLAG_CAN_MULTI_CONN;
  if (exp.readOnly) {
    flags |= NBD_FLAG_READ_ONLY;
  } else {
    // WRITE_ZEROES always works (devices fall back to writing zeros); FAST_ZERO is advertised as
    // qemu does and answered with ENOTSUP when the device has no fast path.
    flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  }
  // proto.md: DF "MUST leave this flag clear if structured replies have not been negotiated".
  if (ctx.structured) flags |= NBD_FLAG_SEND_DF;
  return flags;
}

/**
 * NBD_INFO_BLOCK_SIZE for an export. The minimum is the device's request alignment only when the
 * client promised to obey it (asked for INFO_BLOCK_SIZE) or merely asked for INFO; otherwise 1,
 * so clients that know nothing about block sizes are never penalised (qemu does the same).
 */
export function blockSizes(exp: NbdExport, clientWillObey: boolean): BlockSizes {
  const minimum = clientWillObey ? Math.max(1, exp.device.capabilities.requestAlignment) : 1;
  return { minimum, preferred: Math.max(4096, minimum), maximum: NBD_MAX_PAYLOAD };
}
