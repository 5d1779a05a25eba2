// NbdServer: listeners (unix socket, TCP, inherited fds for systemd socket activation), client
// admission (qemu-nbd -e: clients beyond the limit wait, unanswered, until a slot frees, as they
// would in qemu-nbd's listen backlog), and the shared lifecycle: close() stops listening and lets
// connections finish their in-flight requests, destroy() drops everything.

import { unlink } from 'node:fs/promises';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import {
  EnvironmentError,
  InvalidArgumentError,
  strerror,
  systemErrorCode,
} from '../core/index.js';
import { NbdServerConnection, type ConnectionEnd, type NbdLogger } from './connection.js';
import { BufferPool, ByteBudget } from './buffer-pool.js';
import { exportTable, type NbdExport, type NbdExportOptions } from './export.js';
import { DEFAULT_HANDSHAKE_LIMITS, type HandshakeLimits, type ServerTls } from './handshake.js';

export type ListenAddress =
  | { kind: 'unix'; path: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'fd'; fd: number };

export type BoundAddress =
  | { kind: 'unix'; path: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'fd'; fd: number };

export interface NbdServerOptions {
  exports: readonly NbdExportOptions[];
  /**
   * Simultaneous clients (qemu-nbd -e/--shared); 0 = unlimited. Also decides CAN_MULTI_CONN,
   * advertised exactly when more than one client is allowed (as qemu does). @default 0
   */
  maxConnections?: number;
  /** Clients waiting for a free slot beyond `maxConnections`. @default 128 */
  maxPendingConnections?: number;
  /** Handshake time limit in ms; 0 = none. @default 10000 (qemu's NBD_DEFAULT_HANDSHAKE_MAX_SECS) */
  handshakeTimeoutMs?: number;
  /** Requests processed concurrently per connection. @default 16 (qemu MAX_NBD_REQUESTS) */
  maxInFlight?: number;
  /** READ/WRITE bytes in flight per connection. @default 64 MiB */
  maxInFlightBytes?: number;
  /** READ/WRITE bytes in flight across all connections. @default 256 MiB */
  maxServerInFlightBytes?: number;
  /**
   * Error value for requests refused by validation: 'qemu' answers EINVAL to all of them exactly
   * as qemu-nbd does; 'spec' uses proto.md's preferred EPERM (read-only) and ENOSPC (write past
   * the end). @default 'qemu'
   */
  rejectionErrors?: 'qemu' | 'spec';
  /** Require TLS (FORCEDTLS) with these credentials. */
  tls?: ServerTls;
  limits?: Partial<HandshakeLimits>;
  /** Where log lines go (library code never prints). @default discard */
  log?: NbdLogger;
  /** Called after each connection has ended, with the number still active. */
  onConnectionEnd?: (end: ConnectionEnd & { active: number }) => void;
}

function positiveInt(name: string, v: number | undefined, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < min) {
    throw new InvalidArgumentError(
      `Expected the \`${name}\` option to be an integer >= ${min}, got \`${v}\``,
    );
  }
  return v;
}

export class NbdServer {
  readonly exports: ReadonlyMap<string, NbdExport>;
  readonly #maxConnections: number;
  readonly #maxPending: number;
  readonly #config: ConstructorParameters<typeof NbdServerConnection>[1];
  readonly #onEnd: NbdServerOptions['onConnectionEnd'];
  readonly #log: NbdLogger;
  readonly #listeners: { server: net.Server; address: BoundAddress }[] = [];
  readonly #active = new Set<NbdServerConnection>();
  readonly #pending: Duplex[] = [];
  #nextId = 1;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #closing: Promise<void> | undefined;

  constructor(options: NbdServerOptions) {
    this.exports = exportTable(options.exports);
    if (this.exports.size === 0)
      throw new InvalidArgumentError('NBD server needs at least one export');
    this.#maxConnections = positiveInt('maxConnections', options.maxConnections, 0);
    this.#maxPending = positiveInt('maxPendingConnections', options.maxPendingConnections, 128);
    this.#log = options.log ?? (() => undefined);
    this.#onEnd = options.onConnectionEnd;
    const limits: HandshakeLimits = { ...DEFAULT_HANDSHAKE_LIMITS, ...options.limits };
    this.#config = {
      exports: this.exports,
      tls: options.tls,
      multipleClients: this.#maxConnections !== 1,
      limits,
      isShuttingDown: () => this.#state !== 'open',
      handshakeTimeoutMs: positiveInt('handshakeTimeoutMs', options.handshakeTimeoutMs, 10_000),
      maxInFlight: positiveInt('maxInFlight', options.maxInFlight, 16, 1),
      maxInFlightBytes: positiveInt('maxInFlightBytes', options.maxInFlightBytes, 64 << 20, 1),
      log: this.#log,
      rejectionErrors: options.rejectionErrors ?? 'qemu',
      pool: new BufferPool(),
      budget: new ByteBudget(
        positiveInt('maxServerInFlightBytes', options.maxServerInFlightBytes, 256 << 20, 1),
      ),
    };
  }

  /** Addresses being listened on (TCP port 0 resolved to the real port). */
  get addresses(): readonly BoundAddress[] {
    return this.#listeners.map((l) => l.address);
  }

  /** Connections being served (handshake or transmission), not counting waiting ones. */
  get activeConnections(): number {
    return this.#active.size;
  }

  /** Start listening. Errors read like qemu's (util/qemu-sockets.c). */
  async listen(address: ListenAddress): Promise<BoundAddress> {
    if (this.#state !== 'open') throw new InvalidArgumentError('NBD server is closed');
    // allowHalfOpen: a client may shut its side after NBD_CMD_DISC (libnbd does) and must still
    // get the replies to what it sent before (proto.md); the connection ends its side itself.
    const server = net.createServer(
      { noDelay: true, pauseOnConnect: false, allowHalfOpen: true },
      (socket) => this.#accept(socket),
    );
    server.on('error', (err) => this.#log('error', `listener error: ${err.message}`));
    if (address.kind === 'unix') {
      try {
        await unlink(address.path);
      } catch (err) {
        if (systemErrorCode(err) !== 'ENOENT') {
          throw new EnvironmentError(
            `Failed to unlink socket ${address.path}: ${strerror(systemErrorCode(err))}`,
            { cause: err },
          );
        }
      }
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        const code = systemErrorCode(err);
        const what =
          address.kind === 'unix'
            ? `Failed to bind socket to ${address.path}`
            : address.kind === 'tcp'
              ? code === 'EADDRINUSE'
                ? 'Failed to find an available port'
                : 'Failed to bind socket'
              : `Failed to use socket activation fd ${address.fd}`;
        reject(new EnvironmentError(`${what}: ${strerror(code) || err.message}`, { cause: err }));
      };
      server.once('error', onError);
      const done = () => {
        server.off('error', onError);
        resolve();
      };
      if (address.kind === 'unix') server.listen({ path: address.path, backlog: 511 }, done);
      else if (address.kind === 'tcp') {
        server.listen({ host: address.host, port: address.port, backlog: 511 }, done);
      } else server.listen({ fd: address.fd }, done);
    });
    let bound: BoundAddress = address;
    if (address.kind === 'tcp') {
      const a = server.address();
      if (a && typeof a === 'object') bound = { kind: 'tcp', host: a.address, port: a.port };
    }
    this.#listeners.push({ server, address: bound });
    return bound;
  }

  /** Serve a connected socket (socket activation with Accept=yes, stdio, tests). */
  serveSocket(socket: Duplex): void {
    this.#accept(socket);
  }

  #accept(socket: Duplex): void {
    if (this.#state !== 'open') {
      socket.destroy();
      return;
    }
    if (this.#maxConnections > 0 && this.#active.size >= this.#maxConnections) {
      if (this.#pending.length >= this.#maxPending) {
        this.#log('warn', 'too many clients waiting for a connection slot; dropping one');
        socket.destroy();
        return;
      }
      this.#pending.push(socket);
      socket.once('close', () => {
        const i = this.#pending.indexOf(socket);
        if (i >= 0) this.#pending.splice(i, 1);
      });
      socket.on('error', () => undefined);
      return;
    }
    this.#start(socket);
  }

  #start(socket: Duplex): void {
    const conn = new NbdServerConnection(socket, this.#config, this.#nextId++);
    this.#active.add(conn);
    void conn.done.then((end) => {
      this.#active.delete(conn);
      this.#admitPending();
      this.#onEnd?.({ ...end, active: this.#active.size + this.#pending.length });
    });
    conn.start();
  }

  #admitPending(): void {
    while (
      this.#state === 'open' &&
      this.#pending.length > 0 &&
      (this.#maxConnections === 0 || this.#active.size < this.#maxConnections)
    ) {
      const next = this.#pending.shift()!;
      if (!next.destroyed) this.#start(next);
    }
  }

  async #stopListening(): Promise<void> {
    const listeners = this.#listeners.splice(0);
    await Promise.all(
      listeners.map(
        (l) =>
          new Promise<void>((resolve) => {
            l.server.close(() => resolve());
          }),
      ),
    );
    // qemu-nbd removes its socket file on exit.
    for (const l of listeners) {
      if (l.address.kind === 'unix') await unlink(l.address.path).catch(() => undefined);
    }
    for (const s of this.#pending.splice(0)) s.destroy();
  }

  /**
   * Stop accepting, let every connection finish its in-flight requests (new ones get
   * ESHUTDOWN, clients still negotiating are dropped), then flush every export. Idempotent.
   * The devices stay open: their owner closes them.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#state = 'closing';
      await this.#stopListening();
      await Promise.all([...this.#active].map((c) => c.close()));
      await this.#flushExports();
      this.#state = 'closed';
    })();
    return this.#closing;
  }

  /** Drop every connection now, then flush every export. Idempotent. */
  async destroy(): Promise<void> {
    this.#state = 'closing';
    const stopping = this.#stopListening();
    const active = [...this.#active];
    for (const c of active) c.destroy();
    await stopping;
    await Promise.all(active.map((c) => c.done));
    await this.#flushExports();
    this.#state = 'closed';
  }

  async #flushExports(): Promise<void> {
    for (const exp of this.exports.values()) {
      if (exp.readOnly) continue;
      try {
        await exp.device.flush();
      } catch (err) {
        this.#log('error', `flush of export '${exp.name}' failed: ${(err as Error).message}`);
      }
    }
  }
}
