// A QMP client per docs/interop/qmp-spec.txt: read the greeting, negotiate capabilities, send
// every command with an id and match replies by id (events may arrive between them), buffer
// events for later waiting, time out commands, and fail every pending command when the
// connection ends. Works over a unix/TCP socket or any pair of streams (e.g. `-qmp stdio`).

import { connect as netConnect, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { Readable, Writable } from 'node:stream';
import { AbortError, EnvironmentError, ProtocolError, debug } from '../../core/index.js';
import { QmpCommandError, QmpTimeoutError } from './errors.js';

const log = debug('qmp');

/** One line of QMP text may not exceed this (query-qmp-schema is ~200 KiB). */
const MAX_LINE = 16 * 1024 * 1024;
/** Events kept while nobody waits for them; the oldest are dropped first. */
const MAX_BUFFERED_EVENTS = 1000;

export interface QmpGreeting {
  QMP: {
    version: { qemu: { major: number; minor: number; micro: number }; package: string };
    capabilities: string[];
  };
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export type QmpTarget = { path: string } | { host: string; port: number };

export interface QmpOptions {
  /** Default timeout for each command, in ms. @default 30000 */
  commandTimeoutMs?: number;
}

export interface ConnectOptions extends QmpOptions {
  /** Keep retrying a refused/missing socket until this long has passed. @default 10000 */
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  command: string;
  timer: NodeJS.Timeout | undefined;
}

interface EventWaiter {
  match: (e: QmpEvent) => boolean;
  resolve: (e: QmpEvent) => void;
}

export class QmpClient {
  greeting: QmpGreeting | undefined;
  readonly #out: Writable;
  readonly #in: Readable;
  readonly #pending = new Map<string, Pending>();
  readonly #events: QmpEvent[] = [];
  readonly #waiters = new Set<EventWaiter>();
  readonly #closeListeners = new Set<(err: Error) => void>();
  readonly #commandTimeoutMs: number;
  #greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: Error) => void } | undefined;
  #buffer = '';
  #nextId = 1;
  #closedError: Error | undefined;
  readonly #onData = (chunk: Buffer | string): void => this.#receive(chunk.toString());
  readonly #onEnd = (): void =>
    this.#terminate(
      new EnvironmentError('QMP connection closed by QEMU', { code: 'VMF_QMP_CLOSED' }),
    );
  readonly #onError = (err: Error): void =>
    this.#terminate(
      new EnvironmentError(`QMP connection error: ${err.message}`, {
        code: 'VMF_QMP_CLOSED',
        cause: err,
      }),
    );

  /** Wrap already-connected streams. Call `handshake()` next (connect() does both). */
  constructor(input: Readable, output: Writable, options: QmpOptions = {}) {
    this.#in = input;
    this.#out = output;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    input.on('data', this.#onData);
    input.on('end', this.#onEnd);
    input.on('close', this.#onEnd);
    input.on('error', this.#onError);
    output.on('error', this.#onError);
  }

  /** Connect to a QMP server socket, retrying until it exists, then negotiate capabilities. */
  static async connect(target: QmpTarget, options: ConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (options.connectTimeoutMs ?? 10_000);
    for (;;) {
      if (options.signal?.aborted)
        throw new AbortError('QMP connect aborted', { cause: options.signal.reason });
      try {
        const socket = await openSocket(target);
        const client = new QmpClient(socket, socket, options);
        try {
          await client.handshake(Math.max(1000, deadline - Date.now()));
        } catch (err) {
          client.destroy();
          throw err;
        }
        return client;
      } catch (err) {
        const code = (err as { code?: string }).code;
        const retry = code === 'ENOENT' || code === 'ECONNREFUSED';
        if (!retry || Date.now() >= deadline) {
          const where = 'path' in target ? target.path : `${target.host}:${target.port}`;
          throw new EnvironmentError(
            `Could not connect to QMP at ${where}: ${(err as Error).message}`,
            {
              code: 'VMF_QMP_CONNECT',
              cause: err,
            },
          );
        }
        await delay(50, undefined, options.signal ? { signal: options.signal } : {}).catch(
          () => undefined,
        );
      }
    }
  }

  /** Read the greeting and leave capabilities-negotiation mode (qmp-spec 2.2, 4). */
  async handshake(timeoutMs = 10_000): Promise<QmpGreeting> {
    const greeting = this.greeting
      ? this.greeting
      : await new Promise<QmpGreeting>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new QmpTimeoutError('greeting', timeoutMs)),
            timeoutMs,
          );
          this.#greetingWaiter = {
            resolve: (g) => {
              clearTimeout(timer);
              resolve(g);
            },
            reject: (e) => {
              clearTimeout(timer);
              reject(e);
            },
          };
          if (this.#closedError) reject(this.#closedError);
        });
    await this.execute('qmp_capabilities', undefined, { timeoutMs });
    return greeting;
  }

  /** Run a command and resolve with its `return` value; QMP errors reject with QmpCommandError. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const id = `vmforge-${this.#nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg['arguments'] = args;
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = {
        resolve: resolve as (v: unknown) => void,
        reject,
        command,
        timer:
          timeoutMs > 0
            ? setTimeout(() => {
                this.#pending.delete(id);
                reject(new QmpTimeoutError(command, timeoutMs));
              }, timeoutMs)
            : undefined,
      };
      const signal = options.signal;
      if (signal) {
        if (signal.aborted) {
          reject(new AbortError(`QMP ${command} aborted`, { cause: signal.reason }));
          return;
        }
        signal.addEventListener(
          'abort',
          () => {
            if (this.#pending.delete(id)) {
              clearTimeout(pending.timer);
              reject(new AbortError(`QMP ${command} aborted`, { cause: signal.reason }));
            }
          },
          { once: true },
        );
      }
      this.#pending.set(id, pending);
      log('->', JSON.stringify(msg));
      this.#out.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** HMP passthrough (`human-monitor-command`); HMP text is not a stable interface. */
  hmp(
    commandLine: string,
    options: { cpuIndex?: number; timeoutMs?: number } = {},
  ): Promise<string> {
    const args: Record<string, unknown> = { 'command-line': commandLine };
    if (options.cpuIndex !== undefined) args['cpu-index'] = options.cpuIndex;
    return this.execute<string>(
      'human-monitor-command',
      args,
      options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
    );
  }

  /** Events received and not yet taken by waitForEvent(), oldest first. */
  bufferedEvents(): readonly QmpEvent[] {
    return this.#events;
  }

  /** Remove and return the buffered events. */
  takeEvents(): QmpEvent[] {
    return this.#events.splice(0);
  }

  /**
   * The first event named `name` (and passing `match`), taking it from the buffer if it already
   * arrived, else waiting for it. Rejects on timeout, abort, or connection end.
   */
  waitForEvent(
    name: string | ((e: QmpEvent) => boolean),
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<QmpEvent> {
    const match = typeof name === 'string' ? (e: QmpEvent) => e.event === name : name;
    const label = typeof name === 'string' ? name : 'event';
    const i = this.#events.findIndex(match);
    if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0]!);
    if (this.#closedError) return Promise.reject(this.#closedError);
    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        this.#closeListeners.delete(onClose);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const waiter: EventWaiter = {
        match,
        resolve: (e) => {
          cleanup();
          resolve(e);
        },
      };
      const onClose = (err: Error): void => {
        cleanup();
        reject(err);
      };
      const onAbort = (): void => {
        cleanup();
        reject(
          new AbortError(`waiting for QMP ${label} aborted`, { cause: options.signal?.reason }),
        );
      };
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          reject(new QmpTimeoutError(label, options.timeoutMs!));
        }, options.timeoutMs);
      }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
      this.#closeListeners.add(onClose);
    });
  }

  get closed(): boolean {
    return this.#closedError !== undefined;
  }

  /** Close our end. Pending commands fail with "connection closed". Idempotent. */
  async close(): Promise<void> {
    if (this.#closedError) return;
    this.#terminate(new EnvironmentError('QMP connection closed', { code: 'VMF_QMP_CLOSED' }));
    await new Promise<void>((resolve) => this.#out.end(resolve));
    (this.#in as Partial<Socket>).destroy?.();
  }

  /** Drop the connection at once. Idempotent. */
  destroy(): void {
    this.#terminate(new EnvironmentError('QMP connection destroyed', { code: 'VMF_QMP_CLOSED' }));
    (this.#in as Partial<Socket>).destroy?.();
    (this.#out as Partial<Socket>).destroy?.();
  }

  #receive(text: string): void {
    this.#buffer += text;
    let nl: number;
    while ((nl = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line) this.#dispatch(line);
    }
    if (this.#buffer.length > MAX_LINE) {
      this.#terminate(
        new ProtocolError(`QMP line longer than ${MAX_LINE} bytes`, { code: 'VMF_QMP_PROTOCOL' }),
      );
    }
  }

  #dispatch(line: string): void {
    log('<-', line.length > 500 ? `${line.slice(0, 500)}…` : line);
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#terminate(
        new ProtocolError(`QMP sent invalid JSON: ${line.slice(0, 200)}`, {
          code: 'VMF_QMP_PROTOCOL',
        }),
      );
      return;
    }
    if (typeof msg !== 'object' || msg === null) return;
    if ('QMP' in msg) {
      this.greeting = msg as unknown as QmpGreeting;
      this.#greetingWaiter?.resolve(this.greeting);
      this.#greetingWaiter = undefined;
      return;
    }
    if (typeof msg['event'] === 'string') {
      this.#deliverEvent(msg as unknown as QmpEvent);
      return;
    }
    // "drop all the responses that have an unknown id" (qmp-spec 2.4.1); unmatched id-less
    // errors are parse errors for input we never send.
    const id = msg['id'];
    const pending = typeof id === 'string' ? this.#pending.get(id) : undefined;
    if (!pending) return;
    this.#pending.delete(id as string);
    clearTimeout(pending.timer);
    if ('error' in msg) {
      const e = msg['error'] as { class?: string; desc?: string };
      pending.reject(new QmpCommandError(pending.command, e.class ?? 'GenericError', e.desc ?? ''));
    } else {
      pending.resolve(msg['return']);
    }
  }

  #deliverEvent(e: QmpEvent): void {
    for (const w of this.#waiters) {
      if (w.match(e)) {
        w.resolve(e);
        return;
      }
    }
    this.#events.push(e);
    if (this.#events.length > MAX_BUFFERED_EVENTS) this.#events.shift();
  }

  #terminate(err: Error): void {
    if (this.#closedError) return;
    this.#closedError = err;
    this.#in.off('data', this.#onData);
    this.#greetingWaiter?.reject(err);
    this.#greetingWaiter = undefined;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#pending.clear();
    for (const l of [...this.#closeListeners]) l(err);
  }
}

function openSocket(target: QmpTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      'path' in target ? netConnect(target.path) : netConnect(target.port, target.host);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
