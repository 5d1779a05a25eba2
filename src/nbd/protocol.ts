// NBD protocol constants (NetworkBlockDevice/nbd doc/proto.md), with the spec's names so code and
// spec can be grepped side by side, plus nameOf*() helpers for log messages (the strings QEMU's
// nbd/common.c uses, so vmforge-nbd's logs read like qemu-nbd's).

/** "NBDMAGIC": first 8 bytes the server sends (proto.md "Newstyle negotiation"). */
export const NBD_INIT_PASSWD = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle magic, and the magic in front of every client option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Magic in front of every option reply. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** Oldstyle magic, only recognised by the client to give a clear error. */
export const NBD_CLISERV_MAGIC = 0x00420281861253n;

export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const NBD_DEFAULT_PORT = 10809;

// Handshake flags (server, 16 bits) and client flags (32 bits).
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags (16 bits), proto.md "Transmission flags".
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// Option replies; errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x8000_0000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_PLATFORM = REP_ERR + 4;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

export function isReplyError(type: number): boolean {
  return type >= REP_ERR;
}

// NBD_REP_INFO types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Commands.
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Command flags.
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply chunk flags and types.
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

export function isChunkError(type: number): boolean {
  return (type & (1 << 15)) !== 0;
}

// base:allocation flags; qemu:allocation-depth is a plain number.
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
/** qemu:dirty-bitmap:NAME extents (qemu docs/interop/nbd.txt): the range is dirty. */
export const NBD_STATE_DIRTY = 1 << 0;

// Error values on the wire (proto.md "Error values"). They are Linux errno numbers, but a
// server must only send these eight.
export const NBD_SUCCESS = 0;
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// Sizes of fixed wire structures.
export const NBD_REQUEST_SIZE = 28;
export const NBD_SIMPLE_REPLY_SIZE = 16;
export const NBD_CHUNK_HEADER_SIZE = 20;
export const NBD_OPTION_HEADER_SIZE = 16;
export const NBD_OPTION_REPLY_HEADER_SIZE = 20;
/** Size + flags + 124 zero bytes ending an NBD_OPT_EXPORT_NAME negotiation. */
export const NBD_EXPORT_NAME_REPLY_SIZE = 134;

/** proto.md "Conventions": strings MUST be at most 4096 bytes (QEMU's NBD_MAX_STRING_SIZE). */
export const NBD_MAX_STRING_SIZE = 4096;
/**
 * Largest READ/WRITE/CACHE payload we accept and advertise (INFO_BLOCK_SIZE maximum); the same
 * as qemu-nbd's NBD_MAX_BUFFER_SIZE and the spec's "SHOULD NOT be considered a DoS" bound.
 */
export const NBD_MAX_PAYLOAD = 32 * 1024 * 1024;
/** qemu's cap on extents in one block status chunk: 1 MiB of descriptors. */
export const NBD_MAX_BLOCK_STATUS_EXTENTS = (1024 * 1024) / 8;

/** The metadata contexts a vmforge export can offer (ids as qemu assigns them). */
export const CONTEXT_BASE_ALLOCATION = 'base:allocation';
export const CONTEXT_ALLOCATION_DEPTH = 'qemu:allocation-depth';
export const META_ID_BASE_ALLOCATION = 0;
export const META_ID_ALLOCATION_DEPTH = 1;
/** "qemu:dirty-bitmap:" + the bitmap's name; the export's i-th bitmap has id 2 + i (qemu). */
export const CONTEXT_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
export const META_ID_DIRTY_BITMAP = 2;

const OPT_NAMES: Record<number, string> = {
  [NBD_OPT_EXPORT_NAME]: 'export name',
  [NBD_OPT_ABORT]: 'abort',
  [NBD_OPT_LIST]: 'list',
  [NBD_OPT_PEEK_EXPORT]: 'peek export',
  [NBD_OPT_STARTTLS]: 'starttls',
  [NBD_OPT_INFO]: 'info',
  [NBD_OPT_GO]: 'go',
  [NBD_OPT_STRUCTURED_REPLY]: 'structured reply',
  [NBD_OPT_LIST_META_CONTEXT]: 'list meta context',
  [NBD_OPT_SET_META_CONTEXT]: 'set meta context',
  [NBD_OPT_EXTENDED_HEADERS]: 'extended headers',
};

const REP_NAMES: Record<number, string> = {
  [NBD_REP_ACK]: 'ack',
  [NBD_REP_SERVER]: 'server',
  [NBD_REP_INFO]: 'info',
  [NBD_REP_META_CONTEXT]: 'meta context',
  [NBD_REP_ERR_UNSUP]: 'unsupported',
  [NBD_REP_ERR_POLICY]: 'denied by policy',
  [NBD_REP_ERR_INVALID]: 'invalid',
  [NBD_REP_ERR_PLATFORM]: 'platform lacks support',
  [NBD_REP_ERR_TLS_REQD]: 'TLS required',
  [NBD_REP_ERR_UNKNOWN]: 'export unknown',
  [NBD_REP_ERR_SHUTDOWN]: 'server shutting down',
  [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'block size required',
  [NBD_REP_ERR_TOO_BIG]: 'option too big',
};

const CMD_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'read',
  [NBD_CMD_WRITE]: 'write',
  [NBD_CMD_DISC]: 'disconnect',
  [NBD_CMD_FLUSH]: 'flush',
  [NBD_CMD_TRIM]: 'trim',
  [NBD_CMD_CACHE]: 'cache',
  [NBD_CMD_WRITE_ZEROES]: 'write zeroes',
  [NBD_CMD_BLOCK_STATUS]: 'block status',
};

const ERR_NAMES: Record<number, string> = {
  [NBD_SUCCESS]: 'success',
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

const CHUNK_NAMES: Record<number, string> = {
  [NBD_REPLY_TYPE_NONE]: 'none',
  [NBD_REPLY_TYPE_OFFSET_DATA]: 'data',
  [NBD_REPLY_TYPE_OFFSET_HOLE]: 'hole',
  [NBD_REPLY_TYPE_BLOCK_STATUS]: 'block status',
  [NBD_REPLY_TYPE_ERROR]: 'generic error',
  [NBD_REPLY_TYPE_ERROR_OFFSET]: 'error at offset',
};

export function nameOfOpt(opt: number): string {
  return OPT_NAMES[opt] ?? '<unknown>';
}
export function nameOfRep(type: number): string {
  return REP_NAMES[type] ?? '<unknown>';
}
export function nameOfCmd(cmd: number): string {
  return CMD_NAMES[cmd] ?? '<unknown>';
}
export function nameOfError(err: number): string {
  return ERR_NAMES[err] ?? `<unknown error ${err}>`;
}
export function nameOfChunk(type: number): string {
  return CHUNK_NAMES[type] ?? (isChunkError(type) ? '<unknown error>' : '<unknown>');
}

/** Flag names in the order and wording of `qemu-nbd --list` (qemu-nbd.c flag_names). */
export const TRANSMISSION_FLAG_NAMES: readonly (readonly [number, string])[] = [
  [NBD_FLAG_READ_ONLY, 'readonly'],
  [NBD_FLAG_SEND_FLUSH, 'flush'],
  [NBD_FLAG_SEND_FUA, 'fua'],
  [NBD_FLAG_ROTATIONAL, 'rotational'],
  [NBD_FLAG_SEND_TRIM, 'trim'],
  [NBD_FLAG_SEND_WRITE_ZEROES, 'zeroes'],
  [NBD_FLAG_SEND_DF, 'df'],
  [NBD_FLAG_CAN_MULTI_CONN, 'multi'],
  [NBD_FLAG_SEND_RESIZE, 'resize'],
  [NBD_FLAG_SEND_CACHE, 'cache'],
  [NBD_FLAG_SEND_FAST_ZERO, 'fast-zero'],
];
