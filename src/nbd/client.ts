// NbdClient: one connection to an NBD server in the transmission phase. Requests are
// multiplexed by cookie with many in flight; a single reader loop matches simple replies and
// structured chunks (proto.md "Structured reply chunk message") to their requests. Everything
// the server sends is checked: unknown cookies, chunks outside the request, oversized payloads
// and bad magics end the connection with a ProtocolError, never a hang or a wrong answer.

import net from 'node:net';
import {
  EnvironmentError,
  InvalidArgumentError,
  ProtocolError,
  fromSystemError,
  strerror,
} from '../core/index.js';
import { Channel, ConnectionClosedError } from './channel.js';
import {
  clientListExports,
  clientNegotiate,
  type ClientHandshakeOptions,
  type ClientNegotiated,
  type ClientTlsConfig,
  type ExportListEntry,
} from './client-handshake.js';
import { nbdErrnoToCode } from './errno.js';
import {
  NBD_CHUNK_HEADER_SIZE,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  isChunkError,
  nameOfChunk,
  nameOfCmd,
} from './protocol.js';
import { decodeReplyHeader, encodeRequest, type StatusExtent } from './wire.js';

/** An NBD command failed on the server. `nbdErrno` is the wire value, `errno` its name. */
export class NbdRequestError extends EnvironmentError {
  override name = 'NbdRequestError';
  readonly nbdErrno: number;
  readonly serverMessage: string;
  constructor(command: number, nbdErrno: number, serverMessage: string) {
    const code = nbdErrnoToCode(nbdErrno);
    super(
      `NBD ${nameOfCmd(command)} failed: ${strerror(code)}${serverMessage ? ` (server: ${serverMessage})` : ''}`,
      { code: 'VMF_NBD_REQUEST', errno: code },
    );
    this.nbdErrno = nbdErrno;
    this.serverMessage = serverMessage;
  }
}

export interface NbdConnectAddress {
  /** Unix socket path (a leading NUL selects the abstract namespace). */
  socket?: string;
  host?: string;
  port?: number;
}

export interface NbdClientOptions extends ClientHandshakeOptions, NbdConnectAddress {
  /** Requests in flight before `request()` waits. @default 64 */
  maxInFlight?: number;
  /** Abort connecting/negotiating after this long. @default 30000 */
  connectTimeoutMs?: number;
}

interface Pending {
  command: number;
  offset: number;
  length: number;
  /** READ destination. */
  buf: Uint8Array | undefined;
  /** BLOCK_STATUS results by context id. */
  extents: Map<number, StatusExtent[]> | undefined;
  error: NbdRequestError | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface ReadFlags {
  fua?: boolean;
  /** NBD_CMD_FLAG_DF: ask for one contiguous data chunk. */
  df?: boolean;
}

function connectSocket(addr: NbdConnectAddress, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const where = addr.socket !== undefined ? `'${addr.socket}'` : `'${addr.host}:${addr.port}'`;
    const sock =
      addr.socket !== undefined
        ? net.connect({ path: addr.socket })
        : net.connect({ host: addr.host ?? 'localhost', port: addr.port ?? 10809, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new EnvironmentError(`Failed to connect to ${where}: Connection timed out`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(fromSystemError(err, `Failed to connect to ${where}`));
    };
    sock.once('error', onError);
  });
}

async function withTimeout<T>(
  p: Promise<T>,
  ms: number,
  onTimeout: () => void,
  what: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new EnvironmentError(`${what} timed out after ${ms / 1000} seconds`));
    }, ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** List a server's exports (qemu-nbd -L, nbdinfo --list). */
export async function listNbdExports(
  options: NbdConnectAddress & { tls?: ClientTlsConfig | undefined; connectTimeoutMs?: number },
): Promise<{ structured: boolean; tls: boolean; exports: ExportListEntry[] }> {
  const ms = options.connectTimeoutMs ?? 30_000;
  const sock = await connectSocket(options, ms);
  const ch = new Channel(sock);
  try {
    return await withTimeout(
      clientListExports(ch, options),
      ms,
      () => ch.destroy(),
      'listing exports',
    );
  } finally {
    ch.end();
    setTimeout(() => ch.destroy(), 1000).unref();
  }
}

export class NbdClient {
  readonly info: ClientNegotiated;
  readonly #ch: Channel;
  readonly #pending = new Map<number, Pending>();
  readonly #maxInFlight: number;
  #nextCookie = 1;
  #slotWaiters: (() => void)[] = [];
  #failure: Error | undefined;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #closed: Promise<void>;

  private constructor(ch: Channel, info: ClientNegotiated, maxInFlight: number) {
    this.#ch = ch;
    this.info = info;
    this.#maxInFlight = maxInFlight;
    this.#closed = ch.whenClosed();
    void this.#readLoop();
  }

  static async connect(options: NbdClientOptions): Promise<NbdClient> {
    const ms = options.connectTimeoutMs ?? 30_000;
    const sock = await connectSocket(options, ms);
    const ch = new Channel(sock);
    let info: ClientNegotiated;
    try {
      info = await withTimeout(
        clientNegotiate(ch, options),
        ms,
        () => ch.destroy(),
        'NBD handshake',
      );
    } catch (err) {
      ch.destroy();
      if (err instanceof ConnectionClosedError) {
        throw new ProtocolError(
          `server closed the connection during the handshake: ${err.message}`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
    const max = options.maxInFlight ?? 64;
    if (!Number.isSafeInteger(max) || max < 1) {
      ch.destroy();
      throw new InvalidArgumentError(`invalid maxInFlight ${max}`);
    }
    return new NbdClient(ch, info, max);
  }

  get size(): number {
    return this.info.size;
  }

  get flags(): number {
    return this.info.flags;
  }

  /** Largest single request the server accepts. */
  get maxRequest(): number {
    const max = this.info.blockSizes?.maximum;
    return max && max !== 0xffff_ffff ? Math.min(max, NBD_MAX_PAYLOAD) : NBD_MAX_PAYLOAD;
  }

  // --- requests ---------------------------------------------------------------------------

  async #request(
    command: number,
    flags: number,
    offset: number,
    length: number,
    payload: Uint8Array | undefined,
    buf: Uint8Array | undefined,
  ): Promise<Pending> {
    while (
      this.#state === 'open' &&
      !this.#failure &&
      (this.#pending.size >= this.#maxInFlight || this.#ch.congested)
    ) {
      await new Promise<void>((resolve) => {
        this.#slotWaiters.push(resolve);
        if (this.#ch.congested) void this.#ch.waitWritable().then(() => this.#wake());
      });
    }
    if (this.#failure) throw this.#failure;
    if (this.#state !== 'open') throw new EnvironmentError('NBD connection is closed');
    const cookie = this.#nextCookie++;
    return new Promise<Pending>((resolve, reject) => {
      const p: Pending = {
        command,
        offset,
        length,
        buf,
        extents: command === NBD_CMD_BLOCK_STATUS ? new Map() : undefined,
        error: undefined,
        resolve: () => (p.error ? reject(p.error) : resolve(p)),
        reject,
      };
      this.#pending.set(cookie, p);
      const header = encodeRequest(flags, command, BigInt(cookie), offset, length);
      if (payload) this.#ch.writev([header, payload]);
      else this.#ch.write(header);
    });
  }

  #wake(): void {
    for (const w of this.#slotWaiters.splice(0)) w();
  }

  /** Read `buf.length` bytes at `offset` (one request; at most `maxRequest`). */
  async readInto(buf: Uint8Array, offset: number, flags: ReadFlags = {}): Promise<void> {
    let f = 0;
    if (flags.fua) f |= 1;
    if (flags.df) f |= 1 << 2;
    await this.#request(NBD_CMD_READ, f, offset, buf.length, undefined, buf);
  }

  async write(buf: Uint8Array, offset: number, fua = false): Promise<void> {
    await this.#request(NBD_CMD_WRITE, fua ? 1 : 0, offset, buf.length, buf, undefined);
  }

  async writeZeroes(
    offset: number,
    length: number,
    opts: { fua?: boolean; noHole?: boolean; fastZero?: boolean } = {},
  ): Promise<void> {
    const f = (opts.fua ? 1 : 0) | (opts.noHole ? 2 : 0) | (opts.fastZero ? 16 : 0);
    await this.#request(NBD_CMD_WRITE_ZEROES, f, offset, length, undefined, undefined);
  }

  async trim(offset: number, length: number, fua = false): Promise<void> {
    await this.#request(NBD_CMD_TRIM, fua ? 1 : 0, offset, length, undefined, undefined);
  }

  async flush(): Promise<void> {
    await this.#request(NBD_CMD_FLUSH, 0, 0, 0, undefined, undefined);
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.#request(NBD_CMD_CACHE, 0, offset, length, undefined, undefined);
  }

  /** BLOCK_STATUS: extents per selected context name. */
  async blockStatus(
    offset: number,
    length: number,
    reqOne = false,
  ): Promise<Map<string, StatusExtent[]>> {
    const p = await this.#request(
      NBD_CMD_BLOCK_STATUS,
      reqOne ? 8 : 0,
      offset,
      length,
      undefined,
      undefined,
    );
    const out = new Map<string, StatusExtent[]>();
    for (const [name, id] of this.info.contexts) {
      const e = p.extents!.get(id);
      if (e) out.set(name, e);
    }
    return out;
  }

  // --- reply reader -----------------------------------------------------------------------

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.#ch.read(NBD_SIMPLE_REPLY_SIZE);
        const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
        if (magic === NBD_SIMPLE_REPLY_MAGIC) {
          await this.#simpleReply(head);
        } else if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
          const rest = await this.#ch.read(NBD_CHUNK_HEADER_SIZE - NBD_SIMPLE_REPLY_SIZE);
          const full = new Uint8Array(NBD_CHUNK_HEADER_SIZE);
          full.set(head);
          full.set(rest, NBD_SIMPLE_REPLY_SIZE);
          await this.#chunk(full);
        } else {
          throw new ProtocolError(`invalid magic (got 0x${magic.toString(16)})`);
        }
      }
    } catch (err) {
      if (this.#state === 'open' || this.#pending.size > 0) {
        this.#fail(
          err instanceof ConnectionClosedError
            ? new EnvironmentError(`NBD server closed the connection: ${err.message}`, {
                cause: err,
              })
            : err instanceof Error
              ? err
              : new Error(String(err)),
        );
      }
    }
  }

  #take(cookie: bigint, what: string): [number, Pending] {
    const key = Number(cookie);
    const p = this.#pending.get(key);
    if (!p) throw new ProtocolError(`server sent ${what} for unknown cookie ${cookie}`);
    return [key, p];
  }

  #complete(key: number, p: Pending): void {
    this.#pending.delete(key);
    p.resolve();
    this.#wake();
  }

  async #simpleReply(head: Uint8Array): Promise<void> {
    const h = decodeReplyHeader(head);
    if (h.kind !== 'simple') throw new ProtocolError('internal: expected simple reply');
    const [key, p] = this.#take(h.cookie, 'a simple reply');
    if (h.error !== 0) {
      p.error = new NbdRequestError(p.command, h.error, '');
    } else if (p.command === NBD_CMD_READ) {
      if (this.info.structured) {
        throw new ProtocolError('server sent a simple reply to a read after structured replies');
      }
      p.buf!.set(await this.#ch.read(p.length));
    } else if (p.command === NBD_CMD_BLOCK_STATUS) {
      throw new ProtocolError('server answered block status with a simple reply');
    }
    this.#complete(key, p);
  }

  async #chunk(head: Uint8Array): Promise<void> {
    const h = decodeReplyHeader(head);
    if (h.kind !== 'chunk') throw new ProtocolError('internal: expected chunk');
    if (!this.info.structured)
      throw new ProtocolError('server sent a structured reply chunk without negotiating it');
    const [key, p] = this.#take(h.cookie, `a ${nameOfChunk(h.type)} chunk`);
    const bad = (why: string) =>
      new ProtocolError(`bad ${nameOfChunk(h.type)} chunk for ${nameOfCmd(p.command)}: ${why}`);
    // Bound what we read before trusting it: data chunks carry at most the request, error
    // chunks a 4096-byte message, status chunks the extent cap; everything else is small.
    const limit = isChunkError(h.type)
      ? 6 + 4096 + 8
      : p.command === NBD_CMD_READ
        ? p.length + 8
        : p.command === NBD_CMD_BLOCK_STATUS
          ? NBD_MAX_PAYLOAD
          : 64 * 1024;
    if (h.length > limit) throw bad(`payload of ${h.length} bytes`);
    const payload = await this.#ch.read(h.length);
    const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    if (isChunkError(h.type)) {
      // ERROR, ERROR_OFFSET and unknown error types all start with errno + message (proto.md).
      if (payload.length < 6) throw bad('too short');
      const errno = v.getUint32(0);
      const mlen = v.getUint16(4);
      if (6 + mlen > payload.length) throw bad('message longer than the chunk');
      const msg = new TextDecoder().decode(payload.subarray(6, 6 + mlen));
      if (errno === 0) throw bad('error chunk with error 0');
      p.error ??= new NbdRequestError(p.command, errno, msg);
    } else {
      switch (h.type) {
        case NBD_REPLY_TYPE_NONE:
          if (h.length !== 0) throw bad('NONE chunk with a payload');
          if (!(h.flags & NBD_REPLY_FLAG_DONE)) throw bad('NONE chunk without DONE');
          break;
        case NBD_REPLY_TYPE_OFFSET_DATA: {
          if (p.command !== NBD_CMD_READ) throw bad('data for a non-read');
          if (payload.length < 9) throw bad('too short');
          const off = Number(v.getBigUint64(0));
          const n = payload.length - 8;
          if (off < p.offset || off + n > p.offset + p.length)
            throw bad('data outside the request');
          p.buf!.set(payload.subarray(8), off - p.offset);
          break;
        }
        case NBD_REPLY_TYPE_OFFSET_HOLE: {
          if (p.command !== NBD_CMD_READ) throw bad('hole for a non-read');
          if (payload.length !== 12) throw bad('wrong length');
          const off = Number(v.getBigUint64(0));
          const n = v.getUint32(8);
          if (n === 0 || off < p.offset || off + n > p.offset + p.length)
            throw bad('hole outside the request');
          p.buf!.fill(0, off - p.offset, off - p.offset + n);
          break;
        }
        case NBD_REPLY_TYPE_BLOCK_STATUS: {
          if (p.command !== NBD_CMD_BLOCK_STATUS) throw bad('status for another command');
          if (payload.length < 12 || (payload.length - 4) % 8 !== 0) throw bad('bad length');
          const id = v.getUint32(0);
          const extents: StatusExtent[] = [];
          for (let i = 4; i < payload.length; i += 8) {
            const length = v.getUint32(i);
            if (length === 0) throw bad('zero-length extent');
            extents.push({ length, flags: v.getUint32(i + 4) });
          }
          p.extents!.set(id, extents);
          break;
        }
        default:
          throw bad('unknown chunk type');
      }
    }
    if (h.flags & NBD_REPLY_FLAG_DONE) this.#complete(key, p);
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    for (const [key, p] of this.#pending) {
      this.#pending.delete(key);
      p.reject(this.#failure);
    }
    this.#wake();
    this.#ch.destroy();
  }

  // --- lifecycle --------------------------------------------------------------------------

  /** Wait for requests in flight, send NBD_CMD_DISC, and close. Idempotent. */
  async close(): Promise<void> {
    if (this.#state !== 'open') return this.#closed;
    this.#state = 'closing';
    while (this.#pending.size > 0 && !this.#failure) {
      await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
    }
    if (!this.#failure && !this.#ch.closed) {
      this.#ch.write(encodeRequest(0, NBD_CMD_DISC, 0n, 0, 0));
      this.#ch.end();
      setTimeout(() => this.#ch.destroy(), 2000).unref();
    } else {
      this.#ch.destroy();
    }
    await this.#closed;
    this.#state = 'closed';
  }

  /** Drop the connection now; pending requests fail. */
  destroy(): void {
    this.#state = 'closed';
    this.#fail(new EnvironmentError('NBD connection destroyed'));
  }
}
