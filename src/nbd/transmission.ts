// Transmission phase (proto.md "Transmission", "Request types", "Structured reply chunk message"):
// validateRequest() is pure and decides whether a request may run; handleRequest() only sees
// valid requests, runs them against the BlockDevice and sends the reply. The checks and their
// order follow qemu (nbd/server.c nbd_co_receive_request), so errors match qemu-nbd's.

import type { BlockDevice, BlockExtent, FileRange } from '../block/device.js';
import type { BufferPool } from './buffer-pool.js';
import { toNbdErrno } from './errno.js';
import { bitmapExtents, type NbdExportBitmap } from './export-bitmaps.js';
import type { MetaSelection } from './meta-context.js';
import {
  META_ID_ALLOCATION_DEPTH,
  META_ID_BASE_ALLOCATION,
  META_ID_DIRTY_BITMAP,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_MAX_BLOCK_STATUS_EXTENTS,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_NONE,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  nameOfCmd,
} from './protocol.js';
import {
  encodeDataChunkHeader,
  encodeBlockStatusChunk,
  encodeChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeSimpleReply,
  type NbdRequest,
  type StatusExtent,
} from './wire.js';

/** What validation needs to know about the connection. */
export interface TransmissionState {
  readonly size: number;
  readonly readOnly: boolean;
  readonly structured: boolean;
  /** Number of metadata contexts selected (BLOCK_STATUS needs at least one). */
  readonly metaContexts: number;
  /** Largest READ/WRITE/CACHE length (the advertised maximum block size). */
  readonly maxPayload: number;
}

export type Verdict = { ok: true } | { ok: false; errno: number; reason: string };

const OK: Verdict = { ok: true };

function reject(errno: number, reason: string): Verdict {
  return { ok: false, errno, reason };
}

/**
 * Decide whether `req` may run. Pure: no I/O, no state. DISC never reaches here (it has no
 * reply). A rejected WRITE still has its payload on the wire; the caller drains it.
 */
export function validateRequest(req: NbdRequest, st: TransmissionState): Verdict {
  const { type, flags, offset, length } = req;
  const known = type >= NBD_CMD_READ && type <= NBD_CMD_BLOCK_STATUS && type !== NBD_CMD_DISC;
  if (!known) return reject(NBD_EINVAL, `invalid request type (${type}) received`);

  if (
    (type === NBD_CMD_READ || type === NBD_CMD_WRITE || type === NBD_CMD_CACHE) &&
    length > st.maxPayload
  ) {
    return reject(NBD_EINVAL, `len (${length}) is larger than max len (${st.maxPayload})`);
  }
  const writes = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES || type === NBD_CMD_TRIM;
  if (writes && st.readOnly) return reject(NBD_EPERM, 'Export is read-only');

  // Overflow-free range check (qemu: from > size || len > size - from).
  if (offset > st.size || length > st.size - offset) {
    return reject(
      type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL,
      `operation past EOF; From: ${offset}, Len: ${length}, Size: ${st.size}`,
    );
  }

  let valid = NBD_CMD_FLAG_FUA;
  if (type === NBD_CMD_READ && st.structured) valid |= NBD_CMD_FLAG_DF;
  else if (type === NBD_CMD_WRITE_ZEROES) valid |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
  else if (type === NBD_CMD_BLOCK_STATUS) valid |= NBD_CMD_FLAG_REQ_ONE;
  if (flags & ~valid) {
    return reject(
      NBD_EINVAL,
      `unsupported flags for command ${nameOfCmd(type)} (got 0x${flags.toString(16)})`,
    );
  }

  if (type === NBD_CMD_BLOCK_STATUS) {
    if (length === 0) return reject(NBD_EINVAL, 'need non-zero length');
    if (st.metaContexts === 0 || !st.structured) {
      return reject(NBD_EINVAL, 'CMD_BLOCK_STATUS not negotiated');
    }
  }
  return OK;
}

/** Where replies go: each call writes one complete message (never interleaved with another). */
export interface ReplySink {
  /** Queue `buf`; `sent` runs once the socket no longer needs its bytes. */
  send(buf: Uint8Array, sent?: () => void): void;
  /** Queue `bufs` as one burst; `sent` runs once the socket no longer needs their bytes. */
  sendv(bufs: readonly Uint8Array[], sent?: () => void): void;
  /**
   * Send `header` and `length` bytes of a host file without a copy in between (sendfile), or
   * return false having sent nothing (then the caller reads and uses sendv).
   */
  sendFile?(header: Uint8Array, file: FileRange, length: number): boolean;
}

export interface RequestContext {
  readonly device: BlockDevice;
  readonly structured: boolean;
  readonly meta: MetaSelection | undefined;
  /** The export's dirty bitmaps (meta.bitmaps[i] selects bitmaps[i]). */
  readonly bitmaps: readonly NbdExportBitmap[];
  readonly sink: ReplySink;
  /** Where READ reply buffers come from and go back to. */
  readonly pool: BufferPool;
}

/** Success or error reply for a command without data (qemu nbd_send_generic_reply). */
export function sendGenericReply(
  ctx: { structured: boolean; sink: ReplySink },
  cookie: bigint,
  errno: number,
  message: string,
): void {
  if (errno !== 0 && ctx.structured) {
    ctx.sink.send(encodeErrorChunk(NBD_REPLY_FLAG_DONE, cookie, errno, message));
  } else {
    ctx.sink.send(encodeSimpleReply(errno, cookie));
  }
}

/**
 * Run a validated request and send its reply. Device errors become NBD error replies; only a
 * failure to talk to the client (which the sink ignores once the socket is gone) is left out.
 */
export async function handleRequest(
  ctx: RequestContext,
  req: NbdRequest,
  payload: Uint8Array | undefined,
): Promise<void> {
  const { device } = ctx;
  const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
  const fail = (err: unknown, what: string, fastZero = false) =>
    sendGenericReply(ctx, req.cookie, toNbdErrno(err, { fastZero }), `${what}: ${message(err)}`);
  switch (req.type) {
    case NBD_CMD_READ:
      return handleRead(ctx, req);
    case NBD_CMD_WRITE:
      try {
        await device.write(payload!, req.offset, { fua });
      } catch (err) {
        return fail(err, 'writing to file failed');
      }
      return sendGenericReply(ctx, req.cookie, 0, '');
    case NBD_CMD_WRITE_ZEROES: {
      const fastZero = (req.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0;
      try {
        await device.writeZeroes(req.offset, req.length, {
          fua,
          mayUnmap: (req.flags & NBD_CMD_FLAG_NO_HOLE) === 0,
          noFallback: fastZero,
        });
      } catch (err) {
        return fail(err, 'writing to file failed', fastZero);
      }
      return sendGenericReply(ctx, req.cookie, 0, '');
    }
    case NBD_CMD_FLUSH:
      try {
        await device.flush();
      } catch (err) {
        return fail(err, 'flush failed');
      }
      return sendGenericReply(ctx, req.cookie, 0, '');
    case NBD_CMD_TRIM:
      try {
        await device.discard(req.offset, req.length);
        // qemu: FUA on TRIM means "flush afterwards".
        if (fua) await device.flush();
      } catch (err) {
        return fail(err, 'discard failed');
      }
      return sendGenericReply(ctx, req.cookie, 0, '');
    case NBD_CMD_CACHE:
      try {
        await prefetch(device, req.offset, req.length);
      } catch (err) {
        return fail(err, 'caching data failed');
      }
      return sendGenericReply(ctx, req.cookie, 0, '');
    case NBD_CMD_BLOCK_STATUS:
      return handleBlockStatus(ctx, req);
    default:
      return sendGenericReply(ctx, req.cookie, NBD_EINVAL, `invalid request type (${req.type})`);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** NBD_CMD_CACHE: read the range so later reads are served from caches (qemu's prefetch). */
async function prefetch(device: BlockDevice, offset: number, length: number): Promise<void> {
  const step = 4 * 1024 * 1024;
  const buf = Buffer.allocUnsafe(Math.min(step, length));
  for (let pos = offset; pos < offset + length; pos += step) {
    const n = Math.min(step, offset + length - pos);
    await device.read(buf.subarray(0, n), pos);
  }
}

async function handleRead(ctx: RequestContext, req: NbdRequest): Promise<void> {
  const { device, sink } = ctx;
  const { cookie, offset, length } = req;
  // qemu: FUA on a read flushes first (the spec only defines FUA for writes).
  if (req.flags & NBD_CMD_FLAG_FUA) {
    try {
      await device.flush();
    } catch (err) {
      return sendGenericReply(ctx, cookie, toNbdErrno(err), `flush failed: ${message(err)}`);
    }
  }
  if (ctx.structured && !(req.flags & NBD_CMD_FLAG_DF) && length > 0) {
    return sparseRead(ctx, req);
  }
  if (ctx.structured) {
    if (length === 0) {
      sink.send(encodeChunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0));
      return;
    }
    const header = encodeDataChunkHeader(NBD_REPLY_FLAG_DONE, cookie, offset, length);
    const zc = trySendFile(ctx, header, offset, length);
    if (zc === true || (zc !== false && (await zc))) return;
    const data = ctx.pool.take(length);
    try {
      await device.read(data, offset);
    } catch (err) {
      ctx.pool.give(data);
      return sendGenericReply(
        ctx,
        cookie,
        toNbdErrno(err),
        `reading from file failed: ${message(err)}`,
      );
    }
    sink.sendv([header, data], () => ctx.pool.give(data));
    return;
  }
  // Simple reply: read everything first, so an error never follows a success header
  // (proto.md: an error after a zero-error simple header forces a hard disconnect). The
  // sendfile path only sends ranges already in the page cache, which cannot fail to read.
  if (length > 0) {
    const zc = trySendFile(ctx, encodeSimpleReply(0, cookie), offset, length);
    if (zc === true || (zc !== false && (await zc))) return;
  }
  const data = ctx.pool.take(length);
  try {
    await device.read(data, offset);
  } catch (err) {
    ctx.pool.give(data);
    sink.send(encodeSimpleReply(toNbdErrno(err), cookie));
    return;
  }
  sink.sendv([encodeSimpleReply(0, cookie), data], () => ctx.pool.give(data));
}

/**
 * The zero-copy path for a READ reply's data (ReplySink.sendFile): true when taken, false when
 * not (the caller reads and sends). A promise only for devices that must look up their mapping
 * (qcow2); a failing lookup means "not taken" (the normal read then reports the error).
 */
function trySendFile(
  ctx: RequestContext,
  header: Uint8Array,
  offset: number,
  length: number,
): boolean | Promise<boolean> {
  const send = ctx.sink.sendFile?.bind(ctx.sink);
  if (!send || !ctx.device.fileRange) return false;
  let file: ReturnType<NonNullable<BlockDevice['fileRange']>>;
  try {
    file = ctx.device.fileRange(offset, length);
  } catch {
    return false;
  }
  if (file instanceof Promise) {
    return file.then(
      (f) => f !== undefined && send(header, f, length),
      () => false,
    );
  }
  return file !== undefined && send(header, file, length);
}

/**
 * Structured read with holes (qemu nbd_co_send_sparse_read): ranges the device reports as
 * reading zero go out as OFFSET_HOLE chunks without touching the data; the rest as OFFSET_DATA.
 */
async function sparseRead(ctx: RequestContext, req: NbdRequest): Promise<void> {
  const { device, sink } = ctx;
  const { cookie, offset, length } = req;
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    let extents: BlockExtent[];
    try {
      extents = await device.blockStatus(pos, end - pos, { maxExtents: 1 });
    } catch (err) {
      return sendGenericReply(
        ctx,
        cookie,
        toNbdErrno(err),
        `unable to check for holes: ${message(err)}`,
      );
    }
    if (extents.length === 0) {
      return sendGenericReply(ctx, cookie, NBD_EINVAL, 'unable to check for holes: no status');
    }
    for (const e of extents) {
      const start = pos;
      const n = Math.min(e.offset + e.length, end) - start;
      if (n <= 0) continue;
      const final = start + n === end;
      const flags = final ? NBD_REPLY_FLAG_DONE : 0;
      if (e.zero) {
        sink.send(encodeHoleChunk(flags, cookie, start, n));
      } else {
        const header = encodeDataChunkHeader(flags, cookie, start, n);
        const zc = trySendFile(ctx, header, start, n);
        if (zc === true || (zc !== false && (await zc))) {
          pos = start + n;
          if (final) return;
          continue;
        }
        const data = ctx.pool.take(n);
        try {
          await device.read(data, start);
        } catch (err) {
          ctx.pool.give(data);
          // Earlier chunks were not final, so an error chunk can still end the reply.
          return sendGenericReply(
            ctx,
            cookie,
            toNbdErrno(err),
            `reading from file failed: ${message(err)}`,
          );
        }
        sink.sendv([header, data], () => ctx.pool.give(data));
      }
      pos = start + n;
      if (final) return;
    }
  }
}

/** base:allocation flags for an extent (qemu blockstatus_to_extents). */
function allocationFlags(e: BlockExtent): number {
  return (e.data ? 0 : NBD_STATE_HOLE) | (e.zero ? NBD_STATE_ZERO : 0);
}

/** qemu:allocation-depth value: 0 unallocated, 1 this image, 2 its backing file... */
function depthValue(e: BlockExtent): number {
  return e.allocated ? e.depth + 1 : 0;
}

/**
 * Collect merged status extents for [offset, offset+length), at most `max` of them
 * (qemu nbd_extent_array_add: equal neighbours merge while the sum fits in 32 bits).
 */
export async function collectExtents(
  device: BlockDevice,
  offset: number,
  length: number,
  max: number,
  value: (e: BlockExtent) => number,
): Promise<StatusExtent[]> {
  const out: StatusExtent[] = [];
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    const extents = await device.blockStatus(pos, end - pos, { maxExtents: max - out.length + 1 });
    if (extents.length === 0) break;
    for (const e of extents) {
      const n = Math.min(e.offset + e.length, end) - pos;
      if (n <= 0) continue;
      const flags = value(e);
      const last = out[out.length - 1];
      if (last && last.flags === flags && last.length + n <= 0xffff_ffff) {
        last.length += n;
      } else {
        if (out.length >= max) return out;
        out.push({ length: n, flags });
      }
      pos += n;
      if (pos >= end) break;
    }
  }
  if (out.length === 0) throw new Error(`device reported no status at offset ${offset}`);
  return out;
}

/**
 * One chunk per selected context, in qemu's order (nbd_handle_request): base:allocation,
 * qemu:allocation-depth, then the selected bitmaps by id.
 */
async function handleBlockStatus(ctx: RequestContext, req: NbdRequest): Promise<void> {
  const meta = ctx.meta!;
  const { offset, length } = req;
  const max = req.flags & NBD_CMD_FLAG_REQ_ONE ? 1 : NBD_MAX_BLOCK_STATUS_EXTENTS;
  const fromDevice = (value: (e: BlockExtent) => number) => () =>
    collectExtents(ctx.device, offset, length, max, value);
  const contexts: { id: number; extents: () => Promise<StatusExtent[]> }[] = [];
  if (meta.baseAllocation) {
    contexts.push({ id: META_ID_BASE_ALLOCATION, extents: fromDevice(allocationFlags) });
  }
  if (meta.allocationDepth) {
    contexts.push({ id: META_ID_ALLOCATION_DEPTH, extents: fromDevice(depthValue) });
  }
  ctx.bitmaps.forEach((bitmap, i) => {
    if (!meta.bitmaps[i]) return;
    contexts.push({
      id: META_ID_DIRTY_BITMAP + i,
      extents: () => Promise.resolve(bitmapExtents(bitmap, offset, length, max)),
    });
  });
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < contexts.length; i++) {
    const c = contexts[i]!;
    let extents: StatusExtent[];
    try {
      extents = await c.extents();
    } catch (err) {
      // Chunks already sent were not final; an error chunk ends the reply.
      ctx.sink.sendv(chunks);
      return sendGenericReply(
        ctx,
        req.cookie,
        toNbdErrno(err),
        `can't get block status: ${message(err)}`,
      );
    }
    const last = i === contexts.length - 1;
    chunks.push(encodeBlockStatusChunk(last ? NBD_REPLY_FLAG_DONE : 0, req.cookie, c.id, extents));
  }
  ctx.sink.sendv(chunks);
}
