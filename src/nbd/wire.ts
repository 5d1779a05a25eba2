// Encoders and decoders for every fixed NBD wire structure (proto.md "Newstyle negotiation",
// "Option reply types", "Request message", "Simple reply message", "Structured reply chunk
// message"). Pure functions over bytes: no sockets, no state. All integers are big-endian.
//
// The transmission-phase codecs write into caller-provided buffers so a READ reply is built as
// one allocation (header + data) that the device fills in place.

import { ByteReader, ByteWriter, ProtocolError } from '../core/index.js';
import {
  NBD_CHUNK_HEADER_SIZE,
  NBD_EXPORT_NAME_REPLY_SIZE,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_INIT_PASSWD,
  NBD_OPTION_HEADER_SIZE,
  NBD_OPTION_REPLY_HEADER_SIZE,
  NBD_OPTS_MAGIC,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REP_MAGIC,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

const protocolTruncation = (m: string) => new ProtocolError(m, { code: 'VMF_NBD_TRUNCATED' });

function reader(buf: Uint8Array, what: string): ByteReader {
  return new ByteReader(buf, what, 0, protocolTruncation);
}

export function encodeString(s: string): Uint8Array {
  return utf8.encode(s);
}

export function decodeString(b: Uint8Array): string {
  return utf8Decoder.decode(b);
}

// ---------------------------------------------------------------------------------------------
// Handshake

/** Server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags (18 bytes). */
export function encodeGreeting(handshakeFlags: number): Uint8Array {
  return ByteWriter.alloc(18).u64(NBD_INIT_PASSWD).u64(NBD_OPTS_MAGIC).u16(handshakeFlags).buf;
}

export interface Greeting {
  passwd: bigint;
  magic: bigint;
  /** Handshake flags; only meaningful when `magic` is IHAVEOPT. */
  flags: number;
}

/** The first 18 bytes a client receives (the last 2 are handshake flags in newstyle). */
export function decodeGreeting(buf: Uint8Array): Greeting {
  const r = reader(buf, 'NBD greeting');
  return { passwd: r.u64big('passwd'), magic: r.u64big('magic'), flags: r.u16('flags') };
}

export function encodeClientFlags(flags: number): Uint8Array {
  return ByteWriter.alloc(4).u32(flags).buf;
}

export function decodeClientFlags(buf: Uint8Array): number {
  return reader(buf, 'client flags').u32('flags');
}

export interface OptionHeader {
  magic: bigint;
  option: number;
  length: number;
}

export function decodeOptionHeader(buf: Uint8Array): OptionHeader {
  const r = reader(buf, 'option header');
  return { magic: r.u64big('magic'), option: r.u32('option'), length: r.u32('length') };
}

export function encodeOption(option: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return ByteWriter.alloc(NBD_OPTION_HEADER_SIZE + payload.length)
    .u64(NBD_OPTS_MAGIC)
    .u32(option)
    .u32(payload.length)
    .bytes(payload).buf;
}

export interface OptionReplyHeader {
  magic: bigint;
  option: number;
  type: number;
  length: number;
}

export function encodeOptionReply(
  option: number,
  type: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  return ByteWriter.alloc(NBD_OPTION_REPLY_HEADER_SIZE + payload.length)
    .u64(NBD_REP_MAGIC)
    .u32(option)
    .u32(type)
    .u32(payload.length)
    .bytes(payload).buf;
}

export function decodeOptionReplyHeader(buf: Uint8Array): OptionReplyHeader {
  const r = reader(buf, 'option reply header');
  return {
    magic: r.u64big('magic'),
    option: r.u32('option'),
    type: r.u32('type'),
    length: r.u32('length'),
  };
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Uint8Array {
  const w = ByteWriter.alloc(noZeroes ? 10 : NBD_EXPORT_NAME_REPLY_SIZE);
  w.u64(size).u16(flags);
  return w.buf;
}

/** NBD_REP_SERVER payload: u32 name length, name, description (rest of the payload). */
export function encodeRepServer(name: string, description: string): Uint8Array {
  const n = utf8.encode(name);
  const d = utf8.encode(description);
  return ByteWriter.alloc(4 + n.length + d.length)
    .u32(n.length)
    .bytes(n)
    .bytes(d).buf;
}

export function decodeRepServer(buf: Uint8Array): { name: string; description: string } {
  const r = reader(buf, 'NBD_REP_SERVER');
  const len = r.u32('name length');
  const name = decodeString(r.bytes(len, 'name'));
  return { name, description: decodeString(r.bytes(r.remaining)) };
}

export function encodeInfoExport(size: number, flags: number): Uint8Array {
  return ByteWriter.alloc(12).u16(NBD_INFO_EXPORT).u64(size).u16(flags).buf;
}

export function encodeInfoName(name: Uint8Array): Uint8Array {
  return ByteWriter.alloc(2 + name.length)
    .u16(NBD_INFO_NAME)
    .bytes(name).buf;
}

export function encodeInfoDescription(description: string): Uint8Array {
  const d = utf8.encode(description);
  return ByteWriter.alloc(2 + d.length)
    .u16(NBD_INFO_DESCRIPTION)
    .bytes(d).buf;
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

export function encodeInfoBlockSize(sizes: BlockSizes): Uint8Array {
  return ByteWriter.alloc(14)
    .u16(NBD_INFO_BLOCK_SIZE)
    .u32(sizes.minimum)
    .u32(sizes.preferred)
    .u32(sizes.maximum).buf;
}

/** A decoded NBD_REP_INFO payload; unknown types are kept raw (clients must ignore them). */
export type InfoReply =
  | { type: 'export'; size: number; flags: number }
  | { type: 'name'; name: string }
  | { type: 'description'; description: string }
  | { type: 'block-size'; sizes: BlockSizes }
  | { type: 'unknown'; info: number };

export function decodeInfoReply(buf: Uint8Array): InfoReply {
  const r = reader(buf, 'NBD_REP_INFO');
  const info = r.u16('type');
  switch (info) {
    case NBD_INFO_EXPORT: {
      if (buf.length !== 12) {
        throw new ProtocolError(`NBD_INFO_EXPORT has length ${buf.length}, expected 12`);
      }
      return { type: 'export', size: r.u64('size'), flags: r.u16('flags') };
    }
    case NBD_INFO_NAME:
      return { type: 'name', name: decodeString(r.bytes(r.remaining)) };
    case NBD_INFO_DESCRIPTION:
      return { type: 'description', description: decodeString(r.bytes(r.remaining)) };
    case NBD_INFO_BLOCK_SIZE: {
      if (buf.length !== 14) {
        throw new ProtocolError(`NBD_INFO_BLOCK_SIZE has length ${buf.length}, expected 14`);
      }
      return {
        type: 'block-size',
        sizes: { minimum: r.u32('minimum'), preferred: r.u32('preferred'), maximum: r.u32() },
      };
    }
    default:
      return { type: 'unknown', info };
  }
}

/** NBD_REP_META_CONTEXT payload: u32 context id, name. */
export function encodeRepMetaContext(id: number, name: string): Uint8Array {
  const n = utf8.encode(name);
  return ByteWriter.alloc(4 + n.length)
    .u32(id)
    .bytes(n).buf;
}

export function decodeRepMetaContext(buf: Uint8Array): { id: number; name: string } {
  const r = reader(buf, 'NBD_REP_META_CONTEXT');
  return { id: r.u32('context id'), name: decodeString(r.bytes(r.remaining)) };
}

/** Payload of NBD_OPT_INFO / NBD_OPT_GO: name, then the info types requested. */
export function encodeInfoRequest(name: string, infos: readonly number[]): Uint8Array {
  const n = utf8.encode(name);
  const w = ByteWriter.alloc(4 + n.length + 2 + 2 * infos.length);
  w.u32(n.length).bytes(n).u16(infos.length);
  for (const i of infos) w.u16(i);
  return w.buf;
}

/** Payload of NBD_OPT_{LIST,SET}_META_CONTEXT: export name, then length-prefixed queries. */
export function encodeMetaContextRequest(name: string, queries: readonly string[]): Uint8Array {
  const n = utf8.encode(name);
  const qs = queries.map((q) => utf8.encode(q));
  const w = ByteWriter.alloc(4 + n.length + 4 + qs.reduce((a, q) => a + 4 + q.length, 0));
  w.u32(n.length).bytes(n).u32(qs.length);
  for (const q of qs) w.u32(q.length).bytes(q);
  return w.buf;
}

// ---------------------------------------------------------------------------------------------
// Transmission

export interface NbdRequest {
  magic: number;
  flags: number;
  type: number;
  /** Opaque 64-bit handle, echoed in replies. */
  cookie: bigint;
  /**
   * Offset as a JS number. Values beyond 2^53 lose precision but are still far beyond any export
   * (DESIGN.md caps sizes at 2^53), so range validation rejects them correctly.
   */
  offset: number;
  length: number;
}

export function decodeRequest(buf: Uint8Array): NbdRequest {
  if (buf.length < NBD_REQUEST_SIZE) {
    throw protocolTruncation(
      `truncated request: need ${NBD_REQUEST_SIZE} bytes, have ${buf.length}`,
    );
  }
  const v = new DataView(buf.buffer, buf.byteOffset, NBD_REQUEST_SIZE);
  return {
    magic: v.getUint32(0),
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: v.getUint32(16) * 0x1_0000_0000 + v.getUint32(20),
    length: v.getUint32(24),
  };
}

export function encodeRequest(
  flags: number,
  type: number,
  cookie: bigint,
  offset: number,
  length: number,
): Uint8Array {
  const buf = new Uint8Array(NBD_REQUEST_SIZE);
  const v = new DataView(buf.buffer);
  v.setUint32(0, NBD_REQUEST_MAGIC);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setBigUint64(8, cookie);
  v.setBigUint64(16, BigInt(offset));
  v.setUint32(24, length);
  return buf;
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Write a 16-byte simple reply header at `pos` of `buf`. */
export function writeSimpleReply(buf: Uint8Array, pos: number, error: number, cookie: bigint) {
  const v = view(buf);
  v.setUint32(pos, NBD_SIMPLE_REPLY_MAGIC);
  v.setUint32(pos + 4, error);
  v.setBigUint64(pos + 8, cookie);
}

export function encodeSimpleReply(error: number, cookie: bigint): Uint8Array {
  const buf = new Uint8Array(NBD_SIMPLE_REPLY_SIZE);
  writeSimpleReply(buf, 0, error, cookie);
  return buf;
}

/** Write a 20-byte structured reply chunk header at `pos` of `buf`. */
export function writeChunkHeader(
  buf: Uint8Array,
  pos: number,
  flags: number,
  type: number,
  cookie: bigint,
  length: number,
): void {
  const v = view(buf);
  v.setUint32(pos, NBD_STRUCTURED_REPLY_MAGIC);
  v.setUint16(pos + 4, flags);
  v.setUint16(pos + 6, type);
  v.setBigUint64(pos + 8, cookie);
  v.setUint32(pos + 16, length);
}

export function encodeChunkHeader(
  flags: number,
  type: number,
  cookie: bigint,
  length: number,
): Uint8Array {
  const buf = new Uint8Array(NBD_CHUNK_HEADER_SIZE);
  writeChunkHeader(buf, 0, flags, type, cookie, length);
  return buf;
}

/** Bytes in front of the data in an NBD_REPLY_TYPE_OFFSET_DATA chunk (header + offset). */
export const DATA_CHUNK_PREFIX = NBD_CHUNK_HEADER_SIZE + 8;

/**
 * The header of an OFFSET_DATA chunk for `length` data bytes (chunk header + offset). The data
 * follows in its own buffer, sent with it in one writev: the buffer can then be page-aligned,
 * which makes the kernel's copies into it (pread) and out of it (send) faster, as qemu does
 * (nbd_co_send_sparse_read: header iovec + qemu_blockalign'ed data).
 */
export function encodeDataChunkHeader(
  flags: number,
  cookie: bigint,
  offset: number,
  length: number,
): Uint8Array {
  const buf = new Uint8Array(DATA_CHUNK_PREFIX);
  writeChunkHeader(buf, 0, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + length);
  view(buf).setBigUint64(NBD_CHUNK_HEADER_SIZE, BigInt(offset));
  return buf;
}

export function encodeHoleChunk(
  flags: number,
  cookie: bigint,
  offset: number,
  length: number,
): Uint8Array {
  const buf = new Uint8Array(NBD_CHUNK_HEADER_SIZE + 12);
  writeChunkHeader(buf, 0, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
  const v = view(buf);
  v.setBigUint64(NBD_CHUNK_HEADER_SIZE, BigInt(offset));
  v.setUint32(NBD_CHUNK_HEADER_SIZE + 8, length);
  return buf;
}

/** NBD_REPLY_TYPE_ERROR chunk; the message is cut to the spec's 4096-byte string limit. */
export function encodeErrorChunk(
  flags: number,
  cookie: bigint,
  error: number,
  message: string,
): Uint8Array {
  let msg = utf8.encode(message);
  if (msg.length > 4096) msg = msg.subarray(0, 4096);
  const buf = new Uint8Array(NBD_CHUNK_HEADER_SIZE + 6 + msg.length);
  writeChunkHeader(buf, 0, flags, NBD_REPLY_TYPE_ERROR, cookie, 6 + msg.length);
  const v = view(buf);
  v.setUint32(NBD_CHUNK_HEADER_SIZE, error);
  v.setUint16(NBD_CHUNK_HEADER_SIZE + 4, msg.length);
  buf.set(msg, NBD_CHUNK_HEADER_SIZE + 6);
  return buf;
}

export interface StatusExtent {
  length: number;
  flags: number;
}

export function encodeBlockStatusChunk(
  flags: number,
  cookie: bigint,
  contextId: number,
  extents: readonly StatusExtent[],
): Uint8Array {
  const payload = 4 + 8 * extents.length;
  const buf = new Uint8Array(NBD_CHUNK_HEADER_SIZE + payload);
  writeChunkHeader(buf, 0, flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, payload);
  const v = view(buf);
  v.setUint32(NBD_CHUNK_HEADER_SIZE, contextId);
  let pos = NBD_CHUNK_HEADER_SIZE + 4;
  for (const e of extents) {
    v.setUint32(pos, e.length);
    v.setUint32(pos + 4, e.flags);
    pos += 8;
  }
  return buf;
}

/** Reply header as the client first sees it: the magic decides simple vs structured. */
export type ReplyHeader =
  | { kind: 'simple'; error: number; cookie: bigint }
  | { kind: 'chunk'; flags: number; type: number; cookie: bigint; length: number };

/** Decode a simple reply (16 bytes) or chunk header (20 bytes); `buf` holds at least that. */
export function decodeReplyHeader(buf: Uint8Array): ReplyHeader {
  const v = view(buf);
  const magic = v.getUint32(0);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) {
    return { kind: 'simple', error: v.getUint32(4), cookie: v.getBigUint64(8) };
  }
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
    if (buf.length < NBD_CHUNK_HEADER_SIZE) throw protocolTruncation('truncated chunk header');
    return {
      kind: 'chunk',
      flags: v.getUint16(4),
      type: v.getUint16(6),
      cookie: v.getBigUint64(8),
      length: v.getUint32(16),
    };
  }
  throw new ProtocolError(`invalid reply magic 0x${magic.toString(16)}`, {
    code: 'VMF_NBD_BAD_MAGIC',
  });
}

/** Bytes needed after the 4-byte magic to complete a reply header. */
export function replyHeaderSize(magic: number): number | undefined {
  if (magic === NBD_SIMPLE_REPLY_MAGIC) return NBD_SIMPLE_REPLY_SIZE;
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) return NBD_CHUNK_HEADER_SIZE;
  return undefined;
}
