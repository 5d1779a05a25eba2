// Channel: exact-length async reads and back-pressured writes over one stream socket (net.Socket
// or tls.TLSSocket). Both the server connection and the client sit on a Channel, so framing,
// EOF handling and flow control are written once.
//
// Flow control: inbound bytes are buffered in a FrameReader; when nobody is waiting and more
// than `highWaterMark` bytes are buffered, the socket is paused, which stops the kernel reading
// and pushes back on the peer (TCP/unix socket back-pressure). Outbound, `congested` says the
// socket's user-space queue is over its limit; callers stop producing until `waitWritable()`.

import { readSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { FileRange } from '../block/device.js';
import { nativeFileOps } from '../block/native.js';
import { ProtocolError, VmforgeError } from '../core/index.js';
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
      for (const w of this.#drainWaiters.splice(0)) w();
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
   * socket (not TLS) with nothing queued before it (the bytes go straight to the kernel, so
   * anything queued in Node would be overtaken), and only when the whole range is in the page
   * cache (sendfile runs on the event loop and must not wait for the disk). What does not fit in
   * the socket is read from the page cache and queued as usual, in order. Returns false, having
   * sent nothing, when the reply must take the normal path.
   */
  sendFile(
    header: Uint8Array,
    file: FileRange,
    length: number,
    take: (size: number) => Uint8Array,
    give: (buf: Uint8Array) => void,
  ): boolean {
    const native = nativeFileOps();
    if (!native?.sendFile || !native.cached || sendFileUnsupported) return false;
    // What does not fit in the socket is copied on the event loop; bound that copy.
    if (length > SEND_FILE_MAX) return false;
    const socket = this.#socket;
    if (this.#closed || socket.destroyed || socket.writableLength > 0 || this.#corked) {
      return false;
    }
    const sockfd = socketFd(socket);
    if (sockfd === undefined) return false;
    const cached = native.cached(file.fd, file.offset, length);
    if (cached !== 1) {
      if (cached === -1) sendFileUnsupported = true;
      return false;
    }
    const sent = native.sendFile(sockfd, header, file.fd, file.offset, length);
    if (sent <= 0) return false;
    if (sent < header.length) socket.write(header.subarray(sent));
    const done = Math.max(0, sent - header.length);
    this.zeroCopy.replies++;
    this.zeroCopy.bytes += done;
    if (done < length) {
      // The socket is full: the rest goes through the write queue, read right now so that it
      // keeps its place in the stream. The range was cached a moment ago, so this is a copy
      // from the page cache, not a wait for the disk.
      const rest = take(length - done);
      let got = 0;
      try {
        while (got < rest.length) {
          const n = readSync(file.fd, rest, got, rest.length - got, file.offset + done + got);
          if (n === 0) break;
          got += n;
        }
      } catch {
        // The header promised these bytes; after part of them, the stream cannot recover.
        give(rest);
        this.destroy();
        return true;
      }
      rest.fill(0, got); // past the end of the file reads as zeros
      socket.write(rest, () => give(rest));
    }
    return true;
  }

  /**
   * Let the kernel buffer up to `bytes` for this socket (SO_SNDBUF, capped by the system), so
   * that sendFile() can hand over whole replies. Plain sockets with the native helper only.
   */
  growSendBuffer(bytes: number): void {
    const fd = socketFd(this.#socket);
    if (fd !== undefined) nativeFileOps()?.setSendBuffer?.(fd, bytes);
  }

  get congested(): boolean {
    return this.#socket.writableLength > this.#writeHighWater;
  }

  /** Resolve once queued outbound bytes fall below the limit (or the socket closed). */
  waitWritable(): Promise<void> {
    if (!this.congested || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Resolve once everything queued has been handed to the kernel (or the socket is gone). */
  flushed(): Promise<void> {
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
    if (!this.#socket.destroyed) this.#socket.end();
  }

  destroy(): void {
    // Corked replies (an error reply sent just before hanging up) still get their chance.
    if (this.#corked) {
      this.#corked = false;
      this.#socket.uncork();
    }
    this.#socket.destroy();
  }
}

let sendFileUnsupported = false;

/**
 * Largest reply sent by sendFile(): its unsent rest is read synchronously, so this bounds the
 * event loop's stall (2 MiB is qemu-img's request size; nbdcopy's is 256 KiB). Larger replies
 * take the asynchronous path.
 */
const SEND_FILE_MAX = 2 * 1024 * 1024;

/** The descriptor of a plain net.Socket (unix or TCP); undefined for TLS and other streams. */
function socketFd(socket: Duplex): number | undefined {
  if ((socket as { encrypted?: boolean }).encrypted) return undefined;
  const fd = (socket as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
