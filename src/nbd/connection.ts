// One client connection on the server: handshake under a timer, then the transmission loop with
// many requests in flight, replies sent as they complete (out of order), and back-pressure in
// both directions. Lifecycle as every long-lived vmforge object: close() is graceful (finish
// in-flight requests, then end the socket), destroy() immediate; both idempotent.

import type { Duplex } from 'node:stream';
import type { FileRange } from '../block/device.js';
import { ProtocolError } from '../core/index.js';
import type { BufferPool, ByteBudget } from './buffer-pool.js';
import { Channel, ConnectionClosedError } from './channel.js';
import { HandshakeError, negotiate, type HandshakeConfig, type Negotiated } from './handshake.js';
import { selectedContexts } from './meta-context.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EINVAL,
  NBD_ESHUTDOWN,
  NBD_MAX_PAYLOAD,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  nameOfCmd,
} from './protocol.js';
import {
  handleRequest,
  sendGenericReply,
  validateRequest,
  type ReplySink,
  type RequestContext,
  type TransmissionState,
} from './transmission.js';
import { decodeRequest } from './wire.js';

export type NbdLogLevel = 'error' | 'warn' | 'info' | 'debug';
export type NbdLogger = (level: NbdLogLevel, message: string) => void;

export interface ConnectionConfig extends HandshakeConfig {
  /** Drop clients that have not finished the handshake after this long; 0 = never. */
  readonly handshakeTimeoutMs: number;
  /** Requests processed concurrently per connection (qemu: 16). */
  readonly maxInFlight: number;
  /** Bytes of READ/WRITE data in flight per connection before we stop reading requests. */
  readonly maxInFlightBytes: number;
  readonly log: NbdLogger;
  /**
   * Error value for requests refused by validation: 'qemu' sends EINVAL for every refusal, as
   * qemu-nbd does (nbd/server.c nbd_trip), so clients see exactly qemu-nbd's answers; 'spec'
   * sends proto.md's preferred values (EPERM for writes to read-only exports, ENOSPC for writes
   * past the end).
   */
  readonly rejectionErrors: 'qemu' | 'spec';
  /** Shared by all connections of a server. */
  readonly pool: BufferPool;
  /** READ/WRITE bytes in flight across the whole server. */
  readonly budget: ByteBudget;
}

/**
 * A rejected WRITE's payload is read and thrown away up to this size so the stream stays in
 * sync; beyond it the client is treating us as a dump and is disconnected (nbdkit drains 2x its
 * 64 MiB maximum; proto.md allows a hard disconnect for payloads deemed a DoS).
 */
const MAX_DRAIN = 2 * NBD_MAX_PAYLOAD;

export type ConnectionState = 'handshake' | 'transmission' | 'closing' | 'closed';

export interface ConnectionEnd {
  /** The client completed the handshake (qemu-nbd exits after the last such client). */
  negotiated: boolean;
}

export class NbdServerConnection implements ReplySink {
  readonly id: number;
  readonly #ch: Channel;
  readonly #cfg: ConnectionConfig;
  #state: ConnectionState = 'handshake';
  #negotiated: Negotiated | undefined;
  #inflight = 0;
  #inflightBytes = 0;
  #slotWaiters: (() => void)[] = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #done: Promise<ConnectionEnd>;
  #resolveDone!: (end: ConnectionEnd) => void;
  #started = false;
  readonly #take = (size: number) => this.#cfg.pool.take(size);
  readonly #give = (buf: Uint8Array) => this.#cfg.pool.give(buf);
  #drainArmed = false;

  constructor(socket: Duplex, config: ConnectionConfig, id: number) {
    this.id = id;
    this.#cfg = config;
    this.#ch = new Channel(socket);
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
    void this.#ch.whenClosed().then(() => this.#finish());
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The export this client chose, once negotiated. */
  get exportName(): string | undefined {
    return this.#negotiated?.export.name;
  }

  /** Resolves when the connection is fully closed. */
  get done(): Promise<ConnectionEnd> {
    return this.#done;
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    if (this.#cfg.handshakeTimeoutMs > 0) {
      this.#timer = setTimeout(() => {
        this.#cfg.log(
          'warn',
          `option negotiation failed: handshake not completed within ${this.#cfg.handshakeTimeoutMs / 1000} seconds`,
        );
        this.destroy();
      }, this.#cfg.handshakeTimeoutMs);
      this.#timer.unref();
    }
    void this.#run();
  }

  async #run(): Promise<void> {
    let negotiated: Negotiated | 'aborted';
    try {
      negotiated = await negotiate(this.#ch, this.#cfg);
    } catch (err) {
      if (this.#state !== 'closed') this.#logFailure('option negotiation failed', err);
      this.destroy();
      return;
    } finally {
      clearTimeout(this.#timer);
    }
    if (negotiated === 'aborted') {
      this.#state = 'closing';
      this.#ch.end();
      return;
    }
    if (this.#state !== 'handshake') {
      // close() or destroy() arrived while the handshake was finishing.
      this.destroy();
      return;
    }
    this.#negotiated = negotiated;
    this.#state = 'transmission';
    try {
      await this.#transmit(negotiated);
    } catch (err) {
      if (!this.#stopping()) this.#logFailure('Disconnect client, due to', err);
      this.destroy();
    }
  }

  #logFailure(prefix: string, err: unknown): void {
    if (err instanceof ConnectionClosedError) {
      // A client hanging up between messages is normal; mid-message it is worth a line.
      if (err.partial > 0) this.#cfg.log('warn', `${prefix}: ${err.message}`);
      else this.#cfg.log('debug', `${prefix}: ${err.message}`);
      return;
    }
    const msg = err instanceof Error ? err.message : String(err);
    const level = err instanceof ProtocolError || err instanceof HandshakeError ? 'warn' : 'error';
    this.#cfg.log(level, `${prefix}: ${msg}`);
  }

  // --- transmission ----------------------------------------------------------------------

  async #transmit(n: Negotiated): Promise<void> {
    const device = n.export.device;
    const st: TransmissionState = {
      size: device.size,
      readOnly: n.export.readOnly,
      structured: n.structured,
      metaContexts: n.meta ? selectedContexts(n.meta, n.export).length : 0,
      maxPayload: NBD_MAX_PAYLOAD,
    };
    const ctx: RequestContext = {
      device,
      structured: n.structured,
      meta: n.meta,
      bitmaps: n.export.bitmaps,
      sink: this,
      pool: this.#cfg.pool,
    };
    const ch = this.#ch;
    for (;;) {
      while ((this.#inflight >= this.#cfg.maxInFlight || ch.congested) && !this.#stopping()) {
        await this.#waitSlot();
      }
      if (this.#state === 'closed') return;
      const header = ch.tryRead(NBD_REQUEST_SIZE) ?? (await this.#readHeader());
      if (!header) return;
      const req = decodeRequest(header);
      if (req.magic !== NBD_REQUEST_MAGIC) {
        throw new ProtocolError(`invalid magic (got 0x${req.magic.toString(16)})`);
      }
      if (req.type === NBD_CMD_DISC) {
        // proto.md: finish outstanding requests, then close (no reply to DISC).
        await this.close();
        return;
      }
      const verdict = validateRequest(req, st);
      const cost = req.type === NBD_CMD_READ || req.type === NBD_CMD_WRITE ? req.length : 0;
      while (
        verdict.ok &&
        !this.#stopping() &&
        this.#inflight > 0 &&
        this.#inflightBytes + cost > this.#cfg.maxInFlightBytes
      ) {
        await this.#waitSlot();
      }
      // Then the server-wide budget, so hundreds of clients cannot make us buffer gigabytes.
      let taken = 0;
      if (verdict.ok && cost > 0) {
        while (!this.#stopping() && !this.#cfg.budget.tryTake(cost)) {
          await Promise.race([this.#cfg.budget.wait(), this.#ch.whenClosed()]);
        }
        if (!this.#stopping()) taken = cost;
      }
      let payload: Uint8Array | undefined;
      if (req.type === NBD_CMD_WRITE) {
        if (verdict.ok) {
          payload = ch.tryRead(req.length, this.#take) ?? (await ch.read(req.length, this.#take));
        } else if (req.length <= MAX_DRAIN) {
          await ch.skip(req.length);
        } else {
          sendGenericReply(ctx, req.cookie, this.#rejectErrno(verdict.errno), verdict.reason);
          throw new ProtocolError(
            `write of ${req.length} bytes exceeds the maximum of ${NBD_MAX_PAYLOAD}; not draining it`,
          );
        }
      }
      if (this.#stopping()) {
        if (taken) this.#cfg.budget.give(taken);
        if (payload) this.#cfg.pool.give(payload);
        sendGenericReply(ctx, req.cookie, NBD_ESHUTDOWN, 'server is shutting down');
        continue;
      }
      if (!verdict.ok) {
        this.#cfg.log('debug', `invalid request: ${nameOfCmd(req.type)}: ${verdict.reason}`);
        sendGenericReply(ctx, req.cookie, this.#rejectErrno(verdict.errno), verdict.reason);
        continue;
      }
      this.#inflight++;
      this.#inflightBytes += cost;
      handleRequest(ctx, req, payload)
        .catch((err: unknown) => {
          this.#logFailure(`Failed to send reply for ${nameOfCmd(req.type)}`, err);
          this.destroy();
        })
        .finally(() => {
          if (payload) this.#cfg.pool.give(payload);
          if (taken) this.#cfg.budget.give(taken);
          this.#inflight--;
          this.#inflightBytes -= cost;
          this.#wakeSlot();
          if (this.#state === 'closed' && this.#inflight === 0) this.#settle();
        });
    }
  }

  #rejectErrno(errno: number): number {
    return this.#cfg.rejectionErrors === 'qemu' ? NBD_EINVAL : errno;
  }

  /** close() or destroy() has been called (read through a method: the field changes under us). */
  #stopping(): boolean {
    return this.#state === 'closing' || this.#state === 'closed';
  }

  /** Await a request header; undefined when the connection is closing or closed. */
  async #readHeader(): Promise<Uint8Array | undefined> {
    try {
      return await this.#ch.read(NBD_REQUEST_SIZE);
    } catch (err) {
      if (this.#state === 'closing' || this.#state === 'closed') return undefined;
      throw err;
    }
  }

  /**
   * Wait until the loop may read another request: below the in-flight limit and the outbound
   * queue drained below its limit. Woken by request completions and by 'drain'; callers re-check
   * their condition in a loop.
   */
  #waitSlot(): Promise<void> {
    if (this.#state === 'closed') return Promise.resolve();
    return new Promise((resolve) => {
      this.#slotWaiters.push(resolve);
      if (this.#ch.congested) this.#armDrain();
    });
  }

  #armDrain(): void {
    if (this.#drainArmed) return;
    this.#drainArmed = true;
    void this.#ch.waitWritable().then(() => {
      this.#drainArmed = false;
      this.#wakeSlot();
    });
  }

  #wakeSlot(): void {
    if (this.#state === 'closing' && this.#inflight === 0) this.#endGracefully();
    if (this.#slotWaiters.length === 0) return;
    if (this.#ch.congested && this.#state !== 'closed') {
      // Replies are piling up: wake the loop when the socket drains, not before.
      this.#armDrain();
      return;
    }
    for (const w of this.#slotWaiters.splice(0)) w();
  }

  // --- ReplySink --------------------------------------------------------------------------

  send(buf: Uint8Array, sent?: () => void): void {
    this.#ch.write(buf, sent);
  }

  sendv(bufs: readonly Uint8Array[], sent?: () => void): void {
    this.#ch.writev(bufs, sent);
  }

  sendFile(header: Uint8Array, file: FileRange, length: number): boolean {
    return this.#ch.sendFile(header, file, length, this.#take, this.#give);
  }

  // --- lifecycle --------------------------------------------------------------------------

  #endGracefully(): void {
    this.#ch.end();
    // A peer that never closes its side must not keep us alive forever.
    setTimeout(() => this.destroy(), 5000).unref();
  }

  /** Finish in-flight requests, then close. New requests meanwhile get ESHUTDOWN. */
  close(): Promise<void> {
    if (this.#state === 'closed') return this.#done.then(() => undefined);
    if (this.#state === 'handshake') {
      this.destroy();
      return this.#done.then(() => undefined);
    }
    if (this.#state === 'transmission') {
      this.#state = 'closing';
      if (this.#inflight === 0) this.#endGracefully();
    }
    return this.#done.then(() => undefined);
  }

  /** Drop the connection now; replies still being computed are discarded. */
  destroy(): void {
    if (this.#state === 'closed') return;
    clearTimeout(this.#timer);
    this.#ch.destroy();
    this.#finish();
  }

  #finish(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    const zc = this.#ch.zeroCopy;
    if (zc.replies > 0) {
      this.#cfg.log('debug', `${zc.replies} READ replies sent with sendfile (${zc.bytes} bytes)`);
    }
    clearTimeout(this.#timer);
    for (const w of this.#slotWaiters.splice(0)) w();
    // Requests still running against the device finish before `done` resolves, so the owner
    // can flush and close the device afterwards.
    if (this.#inflight === 0) this.#settle();
  }

  #settle(): void {
    this.#resolveDone({ negotiated: this.#negotiated !== undefined });
  }
}
