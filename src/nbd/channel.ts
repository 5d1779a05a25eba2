// Channel: exact-length async reads and back-pressured writes over one stream socket (net.Socket
// or tls.TLSSocket). Both the server connection and the client sit on a Channel, so framing,
// EOF handling and flow control are written once.
//
// Flow control: inbound bytes are buffered in a FrameReader; when nobody is waiting and more
// than `highWaterMark` bytes are buffered, the socket is paused, which stops the kernel reading
// and pushes back on the peer (TCP/unix socket back-pressure). Outbound, `congested` says the
// socket's user-space queue is over its limit; callers stop producing until `waitWritable()`.

import type { Duplex } from 'node:stream';
import type { FileRange } from '../block/device.js';
import { nativeFileOps } from '../block/native.js';
import { ProtocolError, VmforgeError } from '../core/index.js';
import { read as readAsync } from 'node:fs';
import {
  fileSender,
  fileUsable,
  rangeCached,
  readRangeSync,
  sendRange,
  socketFd,
} from './file-send.js';
import { FrameReader } from './frame-reader.js';

/** The peer closed the connection (cleanly or not) while we were waiting for bytes. */
export class ConnectionClosedError extends VmforgeError {
  override name = 'ConnectionClosedError';
  /** How many bytes of the frame being read had arrived (0 = closed between frames). */
  readonly partial: number;
  constructor(message: string, partial: number, cause?: unknown) {
    super('environment', 'VMF_NBD_CLOSED', message, cause === undefined ? {} : { cause });
    this.partial = partial;
  }
}

export interface ChannelOptions {
  /** Pause the socket when this many unread bytes are buffered. Default 4 MiB. */
  highWaterMark?: number;
  /** `congested` becomes true above this many queued outbound bytes. Default 8 MiB. */
  writeHighWaterMark?: number;
}

/** Writes smaller than this are batched within a tick. */
const CORK_BELOW = 4096;

interface Waiter {
  n: number;
  alloc: ((size: number) => Uint8Array) | undefined;
  resolve: (buf: Uint8Array) => void;
  reject: (err: unknown) => void;
}

export class Channel {
  #socket: Duplex;
  readonly #frames = new FrameReader();
  readonly #highWater: number;
  readonly #writeHighWater: number;
  #waiter: Waiter | undefined;
  #skipping: { left: number; resolve: () => void; reject: (e: unknown) => void } | undefined;
  #ended = false;
  #error: unknown;
  #paused = false;
  #drainWaiters: (() => void)[] = [];
  #closeWaiters: (() => void)[] = [];
  #closed = false;
  #corked = false;
  /** Replies and data bytes that left through sendFile() (for -v and tests). */
  readonly zeroCopy = { replies: 0, bytes: 0 };
  /**
   * Output waits in #held, in order, until a write callback calls #pump(): set while a sendFile
   * reply waits for the socket to drain (#tail), or while bytes queued in Node must reach the
   * kernel before the next sendfile.
   */
  #blocked = false;
  #held: Held[] = [];
  #heldBytes = 0;
  /** The unsent rest of a sendFile reply. */
  #tail: FileItem | undefined;
  /** end() arrived while output was held. */
  #ending = false;
  /** #growSendBuffer() has run. */
  #grown = false;
  #idleWaiters: (() => void)[] = [];
  #detach: () => void = () => undefined;

  constructor(socket: Duplex, options: ChannelOptions = {}) {
    this.#highWater = options.highWaterMark ?? 4 * 1024 * 1024;
    this.#writeHighWater = options.writeHighWaterMark ?? 8 * 1024 * 1024;
    this.#socket = socket;
    this.#attach(socket);
  }

  get socket(): Duplex {
    return this.#socket;
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.#frames.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #attach(socket: Duplex): void {
    const onData = (chunk: Buffer) => this.#onData(chunk);
    const onEnd = () => {
      this.#ended = true;
      this.#wake();
    };
    const onError = (err: Error) => {
      this.#error ??= err;
      this.#wake();
    };
    const onClose = () => {
      this.#ended = true;
      this.#closed = true;
      this.#wake();
      this.#dropHeld();
      for (const w of this.#drainWaiters.splice(0)) w();
      for (const w of this.#idleWaiters.splice(0)) w();
      for (const w of this.#closeWaiters.splice(0)) w();
    };
    const onDrain = () => {
      for (const w of this.#drainWaiters.splice(0)) w();
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('drain', onDrain);
    this.#detach = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.off('drain', onDrain);
    };
  }

  #onData(chunk: Uint8Array): void {
    if (this.#skipping) {
      const s = this.#skipping;
      const take = Math.min(s.left, chunk.length);
      s.left -= take;
      if (take < chunk.length) this.#frames.push(chunk.subarray(take));
      if (s.left === 0) {
        this.#skipping = undefined;
        s.resolve();
      }
      this.#maybePause();
      return;
    }
    this.#frames.push(chunk);
    const w = this.#waiter;
    if (w && this.#frames.length >= w.n) {
      this.#waiter = undefined;
      w.resolve(this.#frames.consume(w.n, w.alloc));
    }
    this.#maybePause();
  }

  #maybePause(): void {
    if (
      !this.#paused &&
      !this.#waiter &&
      !this.#skipping &&
      this.#frames.length >= this.#highWater
    ) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #resume(): void {
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  #wake(): void {
    const err = this.#failure();
    if (!err) return;
    const w = this.#waiter;
    if (w) {
      this.#waiter = undefined;
      w.reject(err(this.#frames.length));
    }
    const s = this.#skipping;
    if (s) {
      this.#skipping = undefined;
      s.reject(err(0));
    }
  }

  /** If the stream can deliver no more bytes, a factory for the error to report. */
  #failure(): ((partial: number) => Error) | undefined {
    if (this.#error !== undefined) {
      const cause = this.#error;
      const msg = cause instanceof Error ? cause.message : String(cause);
      return (partial) => new ConnectionClosedError(`connection error: ${msg}`, partial, cause);
    }
    if (this.#ended) {
      return (partial) =>
        new ConnectionClosedError(
          partial > 0 ? 'Unexpected end-of-file before all bytes were read' : 'end of file',
          partial,
        );
    }
    return undefined;
  }

  /**
   * Bytes now if `n` are buffered, else undefined (the fast path: no promise). `alloc` provides
   * the buffer if the bytes must be copied out of several chunks.
   */
  tryRead(n: number, alloc?: (size: number) => Uint8Array): Uint8Array | undefined {
    if (this.#frames.length >= n) {
      const out = this.#frames.consume(n, alloc);
      if (this.#frames.length < this.#highWater) this.#resume();
      return out;
    }
    return undefined;
  }

  /** Exactly `n` bytes; rejects with ConnectionClosedError if the stream ends first. */
  read(n: number, alloc?: (size: number) => Uint8Array): Promise<Uint8Array> {
    const now = this.tryRead(n, alloc);
    if (now) return Promise.resolve(now);
    if (this.#waiter || this.#skipping) {
      return Promise.reject(new ProtocolError('Channel: concurrent reads'));
    }
    const fail = this.#failure();
    if (fail) return Promise.reject(fail(this.#frames.length));
    return new Promise((resolve, reject) => {
      this.#waiter = { n, resolve, reject, alloc };
      this.#resume();
    });
  }

  /** Read and discard exactly `n` bytes without buffering them. */
  skip(n: number): Promise<void> {
    const dropped = this.#frames.skip(n);
    if (dropped === n) return Promise.resolve();
    const fail = this.#failure();
    if (fail) return Promise.reject(fail(dropped));
    return new Promise((resolve, reject) => {
      this.#skipping = { left: n - dropped, resolve, reject };
      this.#resume();
    });
  }

  /** Queue bytes for sending. Never blocks; check `congested` to apply back-pressure. */
  write(buf: Uint8Array, sent?: () => void): void {
    if (this.#closed || this.#socket.destroyed) return;
    if (this.#blocked) return this.#hold({ bufs: [buf], sent, bytes: buf.length });
    // Small messages written in the same tick (replies completing together) leave in one
    // writev instead of one syscall each.
    if (buf.length < CORK_BELOW && !this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(() => {
        if (!this.#corked) return;
        this.#corked = false;
        this.#socket.uncork();
      });
    }
    if (sent) this.#socket.write(buf, (err) => !err && sent());
    else this.#socket.write(buf);
  }

  /**
   * Queue several buffers as one burst (corked: one writev where the platform allows); `sent`
   * runs once the socket no longer needs any of them.
   */
  writev(bufs: readonly Uint8Array[], sent?: () => void): void {
    if (this.#closed || this.#socket.destroyed) return;
    if (this.#blocked) {
      const bytes = bufs.reduce((n, b) => n + b.length, 0);
      return this.#hold({ bufs, sent, bytes });
    }
    this.#writeNow(bufs, sent);
  }

  #writeNow(bufs: readonly Uint8Array[], sent: (() => void) | undefined): void {
    const last = bufs.length - 1;
    const corked = last > 0;
    if (corked) this.#socket.cork();
    for (let i = 0; i <= last; i++) {
      if (i === last && sent) this.#socket.write(bufs[i]!, (err) => !err && sent());
      else this.#socket.write(bufs[i]!);
    }
    if (corked) this.#socket.uncork();
  }

  /**
   * Send `header` followed by `length` bytes of a host file without copying them through a
   * buffer: the kernel passes page-cache pages to the socket (sendfile(2)). Only on a plain
   * socket (not TLS) and only for ranges wholly in the page cache (sendfile runs on the event
   * loop and must not wait for the disk). The bytes go straight to the kernel, so they must not
   * overtake bytes queued in Node: when some are, the reply waits in order (#held) until they
   * have drained. When the socket fills mid-reply, a small slice is queued in libuv; its
   * completion means the socket has room again and the reply continues with sendfile, while
   * later output waits behind it. Returns false, having queued nothing, when the reply must
   * take the normal path.
   */
  sendFile(
    header: Uint8Array,
    file: FileRange,
    length: number,
    take: (size: number) => Uint8Array,
    give: (buf: Uint8Array) => void,
  ): boolean {
    const sender = fileSender();
    if (!sender || length > SEND_FILE_MAX || !fileUsable(file.fd)) return false;
    const socket = this.#socket;
    if (this.#closed || socket.destroyed || socketFd(socket) === undefined) return false;
    if (!rangeCached(sender, file, length)) return false;
    const item: FileItem = { header, file, length, take, give };
    this.zeroCopy.replies++;
    if (this.#blocked) {
      this.#hold({ item, bytes: header.length + length });
    } else if (socket.writableLength > 0 || this.#corked) {
      this.#hold({ item, bytes: header.length + length });
      this.#blockUntilDrained();
    } else if (!this.#sendNow(item, true)) {
      this.zeroCopy.replies--;
      return false; // failed before a byte left: the normal path reads and reports
    }
    return true;
  }

  /**
   * sendfile as much of `item` as the socket takes now; nothing may be queued in Node. If the
   * socket fills, queue a slice and block until it is written. If sendfile fails, the rest is
   * copied (or, when `first` and nothing was sent, false is returned for the normal path).
   */
  #sendNow(item: FileItem, first = false): boolean {
    const socket = this.#socket;
    const sockfd = socketFd(socket);
    const sender = fileSender();
    if (sockfd === undefined || !sender) return false;
    this.#growSendBuffer(sockfd);
    const { header, file, length } = item;
    const { sent, errno } = sendRange(sender, sockfd, header, file, length);
    if (errno !== 0 && sent === 0 && first) return false;
    const done = Math.max(0, sent - header.length);
    const headerLeft = sent < header.length ? header.subarray(sent) : EMPTY;
    this.zeroCopy.bytes += done;
    if (done === length && headerLeft.length === 0) return true;
    if (errno !== 0) {
      // sendfile failed on the file (then it is not tried on it again) or on the socket (then
      // this write fails too and the connection closes): the rest, at most 2 MiB, is copied.
      const rest = item.take(length - done);
      if (!this.#readOrDestroy(item, rest, file.offset + done)) return true;
      this.#writeNow([headerLeft, rest], () => item.give(rest));
      return true;
    }
    // The socket is full. The next slice goes through libuv, which waits for room; the rest
    // follows by sendfile when that write completes (#pump).
    const n = Math.min(SLICE, length - done);
    const slice = item.take(SLICE); // one size for the pool, whatever n is
    if (!this.#readOrDestroy(item, slice.subarray(0, n), file.offset + done)) return true;
    const rest = length - done - n;
    if (rest > 0) {
      const offset = file.offset + done + n;
      this.#tail = { ...item, header: EMPTY, file: { fd: file.fd, offset }, length: rest };
      this.#heldBytes += rest;
      this.#blocked = true;
    }
    this.#writeNow([headerLeft, slice.subarray(0, n)], () => {
      item.give(slice);
      if (rest > 0) this.#pump();
    });
    return true;
  }

  /** Fill `buf` from the page cache; on a read error the stream is lost (destroy), false. */
  #readOrDestroy(item: FileItem, buf: Uint8Array, offset: number): boolean {
    try {
      readRangeSync(item.file.fd, buf, offset);
      return true;
    } catch {
      // The header may be out and promised these bytes: the stream cannot recover.
      item.give(buf);
      this.destroy();
      return false;
    }
  }

  /**
   * A held reply whose range left the page cache meanwhile: read it on the thread pool (not
   * on the event loop) and send it, with output still held behind it.
   */
  #sendRead(item: FileItem): void {
    this.#blocked = true;
    const buf = item.take(item.length);
    const step = (got: number): void => {
      if (got === buf.length) {
        this.#writeNow([item.header, buf], () => item.give(buf));
        this.#pump();
        return;
      }
      readAsync(item.file.fd, buf, got, buf.length - got, item.file.offset + got, (err, n) => {
        if (err) {
          item.give(buf);
          this.destroy();
        } else if (n === 0) {
          buf.fill(0, got); // past the end of the file reads as zeros
          step(buf.length);
        } else {
          step(got + n);
        }
      });
    };
    step(0);
  }

  #hold(h: Held): void {
    this.#held.push(h);
    this.#heldBytes += h.bytes;
  }

  /** Block output until everything queued in Node has reached the kernel, then #pump(). */
  #blockUntilDrained(): void {
    this.#blocked = true;
    // An empty write's callback runs once every earlier write has been handed to the kernel.
    this.#socket.write(EMPTY, (err) => !err && this.#pump());
  }

  /** Release held output in order, until it is all out or a sendfile blocks again. */
  #pump(): void {
    this.#blocked = false;
    const socket = this.#socket;
    if (this.#closed || socket.destroyed) return this.#dropHeld();
    const tail = this.#tail;
    if (tail) {
      this.#tail = undefined;
      this.#heldBytes -= tail.length;
      if (!this.#sendNow(tail)) this.#sendRead(tail);
    }
    while (!this.#blocked && this.#held.length > 0 && !socket.destroyed) {
      const next = this.#held[0]!;
      if ('item' in next && socket.writableLength > 0) {
        this.#blockUntilDrained();
        break;
      }
      this.#held.shift();
      this.#heldBytes -= next.bytes;
      if (!('item' in next)) {
        this.#writeNow(next.bufs, next.sent);
        continue;
      }
      const sender = fileSender();
      const ready = sender && rangeCached(sender, next.item.file, next.item.length);
      if (!ready || !this.#sendNow(next.item)) this.#sendRead(next.item);
    }
    if (!this.congested) for (const w of this.#drainWaiters.splice(0)) w();
    if (this.#blocked) return;
    for (const w of this.#idleWaiters.splice(0)) w();
    if (this.#ending && !socket.destroyed) socket.end();
  }

  #dropHeld(): void {
    this.#held = [];
    this.#heldBytes = 0;
    this.#tail = undefined;
    this.#blocked = false;
  }

  /**
   * On the first sendFile of a unix-socket connection, let the kernel buffer up to SEND_BUFFER
   * (SO_SNDBUF, capped by net.core.wmem_max) so that whole replies go in one sendfile (the
   * default 208 KiB fills with one 256 KiB nbdcopy request). Only connections that send page
   * references get it: copied replies would pin that much kernel memory per client. Not on TCP,
   * where a fixed SO_SNDBUF would switch off the kernel's own buffer sizing.
   */
  #growSendBuffer(sockfd: number): void {
    if (this.#grown) return;
    this.#grown = true;
    if (typeof (this.#socket as { remoteAddress?: unknown }).remoteAddress === 'string') return;
    nativeFileOps()?.setSendBuffer?.(sockfd, SEND_BUFFER);
  }

  get congested(): boolean {
    return this.#socket.writableLength + this.#heldBytes > this.#writeHighWater;
  }

  /** Resolve once queued outbound bytes fall below the limit (or the socket closed). */
  waitWritable(): Promise<void> {
    if (!this.congested || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Resolve once everything queued has been handed to the kernel (or the socket is gone). */
  flushed(): Promise<void> {
    if (this.#blocked && !this.#closed) {
      return new Promise<void>((resolve) => this.#idleWaiters.push(resolve)).then(() =>
        this.flushed(),
      );
    }
    if (this.#socket.writableLength === 0 || this.#closed || this.#socket.destroyed) {
      return Promise.resolve();
    }
    // An empty write's callback runs after every earlier write has been flushed.
    return new Promise((resolve) => this.#socket.write(new Uint8Array(0), () => resolve()));
  }

  /** Resolve when the socket has closed. */
  whenClosed(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#closeWaiters.push(resolve));
  }

  /**
   * Stop listening to the current socket and return it (STARTTLS hands it to TLS). Bytes already
   * buffered would belong to the TLS handshake, which the peer cannot have started before our
   * ACK; they are pushed back into the socket so TLS sees them.
   */
  release(): Duplex {
    const leftover = this.#frames.drain();
    this.#detach();
    this.#detach = () => undefined;
    if (leftover.length) this.#socket.unshift(leftover);
    return this.#socket;
  }

  /** Continue on a new socket (the TLS socket wrapping the released one). */
  adopt(next: Duplex): void {
    this.#socket = next;
    this.#ended = false;
    this.#error = undefined;
    this.#closed = false;
    this.#attach(next);
  }

  /** Half-close after queued writes (graceful). */
  end(): void {
    if (this.#blocked) this.#ending = true;
    else if (!this.#socket.destroyed) this.#socket.end();
  }

  destroy(): void {
    this.#dropHeld();
    // Corked replies (an error reply sent just before hanging up) still get their chance.
    if (this.#corked) {
      this.#corked = false;
      this.#socket.uncork();
    }
    this.#socket.destroy();
  }
}

/**
 * Largest reply sent by sendFile(); larger ones take the asynchronous path (2 MiB is qemu-img's
 * request size, nbdcopy's is 256 KiB).
 */
const SEND_FILE_MAX = 2 * 1024 * 1024;

/** What waits in libuv's queue while the socket drains in the middle of a sendFile reply. */
const SLICE = 64 * 1024;

const EMPTY = new Uint8Array(0);

/** SO_SNDBUF asked for on unix-socket connections that send by sendfile. */
const SEND_BUFFER = 4 * 1024 * 1024;

interface FileItem {
  header: Uint8Array;
  file: FileRange;
  length: number;
  take: (size: number) => Uint8Array;
  give: (buf: Uint8Array) => void;
}

/** Output held back while #blocked: buffers, or a sendFile reply. */
type Held =
  | { bufs: readonly Uint8Array[]; sent: (() => void) | undefined; bytes: number }
  | { item: FileItem; bytes: number };
