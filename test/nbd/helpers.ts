// Test helpers for the NBD unit tests: an in-memory socket pair with a scripted peer that can
// send its bytes one at a time (node-tar's ByteStream idea), and memory-backed devices.
import { duplexPair, type Duplex } from 'node:stream';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { RawDevice } from '../../src/raw/raw-device.js';
import { FrameReader } from '../../src/nbd/frame-reader.js';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import type { NbdLogLevel } from '../../src/nbd/connection.js';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_OPTION_REPLY_HEADER_SIZE,
} from '../../src/nbd/protocol.js';
import {
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeOption,
  type OptionReplyHeader,
} from '../../src/nbd/wire.js';

export type Chunking = 'whole' | 'bytes';

/** One end of a socket pair, driven by a test. */
export class Peer {
  readonly socket: Duplex;
  readonly #frames = new FrameReader();
  #waiter: (() => void) | undefined;
  #ended = false;
  readonly chunking: Chunking;

  constructor(socket: Duplex, chunking: Chunking = 'whole') {
    this.socket = socket;
    this.chunking = chunking;
    socket.on('data', (c: Buffer) => {
      this.#frames.push(c);
      this.#waiter?.();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#waiter?.();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#waiter?.();
    });
    socket.on('error', () => {
      this.#ended = true;
      this.#waiter?.();
    });
  }

  /** Send bytes, split into single bytes (each its own write, a tick apart) if chunking says so. */
  async send(bytes: Uint8Array): Promise<void> {
    if (this.chunking === 'whole') {
      this.socket.write(bytes);
      return;
    }
    for (const b of bytes) {
      if (this.socket.destroyed) return;
      this.socket.write(Uint8Array.of(b));
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Exactly n bytes; rejects if the other side closes first or after `ms`. */
  async recv(n: number, ms = 5000): Promise<Uint8Array> {
    const deadline = Date.now() + ms;
    while (this.#frames.length < n) {
      if (this.#ended) throw new Error(`peer closed with ${this.#frames.length}/${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`timed out waiting for ${n} bytes (have ${this.#frames.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
    return this.#frames.consume(n);
  }

  /** Resolves true once the other side has closed (reading and discarding anything sent). */
  async closed(ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
    return true;
  }

  get buffered(): number {
    return this.#frames.length;
  }

  // --- handshake helpers ---

  async greet(flags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<Uint8Array> {
    const g = await this.recv(18);
    await this.send(encodeClientFlags(flags));
    return g;
  }

  async option(option: number, payload?: Uint8Array): Promise<void> {
    await this.send(encodeOption(option, payload));
  }

  async reply(): Promise<OptionReplyHeader & { payload: Uint8Array }> {
    const h = decodeOptionReplyHeader(await this.recv(NBD_OPTION_REPLY_HEADER_SIZE));
    return { ...h, payload: await this.recv(h.length) };
  }
}

export async function memoryDevice(
  size: number,
  pattern?: (i: number) => number,
): Promise<RawDevice> {
  const storage = new MemoryStorage(size);
  if (pattern) {
    const buf = new Uint8Array(size);
    for (let i = 0; i < size; i++) buf[i] = pattern(i);
    await storage.write(buf, 0);
  }
  return RawDevice.open(storage);
}

export interface TestServer {
  server: NbdServer;
  logs: { level: NbdLogLevel; message: string }[];
  /** Open a connection, returning the client end. */
  connect(chunking?: Chunking): Peer;
}

export function testServer(options: NbdServerOptions): TestServer {
  const logs: { level: NbdLogLevel; message: string }[] = [];
  const server = new NbdServer({
    log: (level, message) => logs.push({ level, message }),
    ...options,
  });
  return {
    server,
    logs,
    connect(chunking: Chunking = 'whole') {
      const [a, b] = duplexPair();
      // A duplexPair does not tell one side that the other was destroyed; a kernel socket does.
      b.once('close', () => setImmediate(() => a.destroy()));
      a.once('close', () => setImmediate(() => b.destroy()));
      server.serveSocket(b);
      return new Peer(a, chunking);
    },
  };
}
