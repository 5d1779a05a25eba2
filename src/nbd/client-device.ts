// NbdBlockDevice: the BlockDevice contract (src/block/device.ts) over an NBD connection, so every
// vmforge operation can read or write an export as if it were a local image. Requests larger
// than the server's maximum block size are split and sent concurrently; optional operations the
// server does not advertise degrade as QEMU's nbd driver does (FUA -> write + flush, no TRIM ->
// no-op, no WRITE_ZEROES -> zero buffers unless the caller wanted the fast path only).

import { homedir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { access } from 'node:fs/promises';
import type {
  BlockCapabilities,
  BlockDevice,
  BlockExtent,
  BlockStatusOptions,
  WriteOptions,
  WriteZeroesOptions,
} from '../block/device.js';
import type { Storage } from '../block/storage.js';
import { assertRange } from '../block/range.js';
import { EnvironmentError, InvalidArgumentError, NotSupportedError } from '../core/index.js';
import { NbdClient, type NbdClientOptions } from './client.js';
import type { ClientTlsConfig } from './client-handshake.js';
import {
  CONTEXT_BASE_ALLOCATION,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from './protocol.js';
import { loadPskCreds, loadX509Creds } from './tls.js';
import { parseNbdUri, qemuNbdFilename, type NbdUri } from './uri.js';

/** Largest effect length for TRIM / WRITE_ZEROES / BLOCK_STATUS per request (32-bit field). */
const MAX_EFFECT = 1 << 30;
const ZERO_BUF = new Uint8Array(1 << 20);

export interface OpenNbdOptions {
  /** Refuse writes locally even if the export is writable. */
  readOnly?: boolean;
  /** Override TLS credentials (e.g. from --object tls-creds-*,endpoint=client). */
  tls?: ClientTlsConfig;
  connectTimeoutMs?: number;
}

/** libnbd's default certificate directories when a nbds URI names none. */
async function defaultCertDir(): Promise<string | undefined> {
  for (const dir of [join(homedir(), '.pki', 'libnbd'), '/etc/pki/libnbd']) {
    try {
      await access(join(dir, 'ca-cert.pem'));
      return dir;
    } catch {
      /* try the next */
    }
  }
  return undefined;
}

/** Client options for a parsed URI, loading the TLS credentials it names. */
export async function clientOptionsForUri(
  uri: NbdUri,
  override?: ClientTlsConfig,
): Promise<NbdClientOptions> {
  const o: NbdClientOptions = { exportName: uri.exportName };
  if (uri.transport === 'unix') o.socket = uri.socket!;
  else {
    o.host = uri.host!;
    o.port = uri.port!;
  }
  if (override) {
    o.tls = override;
  } else if (uri.tls) {
    if (uri.tlsPskFile || uri.tlsType === 'psk') {
      if (!uri.tlsPskFile) throw new InvalidArgumentError('tls-type=psk needs tls-psk-file=FILE');
      const creds = await loadPskCreds({
        dir: dirname(uri.tlsPskFile),
        file: uri.tlsPskFile,
        endpoint: 'client',
        username: uri.username ?? userInfo().username,
      });
      o.tls = { creds };
    } else {
      const dir = uri.tlsCertificates ?? (await defaultCertDir());
      if (!dir) {
        throw new InvalidArgumentError(
          'nbds URI without tls-certificates=DIR or tls-psk-file=FILE, and no ~/.pki/libnbd',
        );
      }
      const creds = await loadX509Creds({
        dir,
        endpoint: 'client',
        verifyPeer: uri.tlsVerifyPeer ?? true,
      });
      o.tls = { creds, hostname: uri.tlsHostname ?? uri.host, verifyPeer: uri.tlsVerifyPeer };
    }
  }
  return o;
}

export class NbdBlockDevice implements BlockDevice {
  /**
   * 'raw': as in QEMU, NBD is the protocol and the export's bytes are a raw image (qemu-img
   * info prints "file format: raw"); a qcow2 stored in an export is opened over this device's
   * storage instead (src/nbd/open-uri.ts).
   */
  readonly format = 'raw' as const;
  readonly filename: string;
  readonly backing = undefined;
  readonly capabilities: BlockCapabilities;
  readonly storage: Storage;
  readonly client: NbdClient;
  readonly #readOnly: boolean;
  #closed = false;

  private constructor(client: NbdClient, filename: string, readOnly: boolean) {
    this.client = client;
    this.filename = filename;
    const f = client.flags;
    this.#readOnly = readOnly || (f & NBD_FLAG_READ_ONLY) !== 0;
    const min = client.info.blockSizes?.minimum ?? 1;
    this.capabilities = {
      readOnly: this.#readOnly,
      fastZero: (f & NBD_FLAG_SEND_FAST_ZERO) !== 0,
      discard: (f & NBD_FLAG_SEND_TRIM) !== 0,
      zeroInit: false,
      multiConn: (f & NBD_FLAG_CAN_MULTI_CONN) !== 0,
      allocationGranularity: min,
      requestAlignment: min,
      hasAllocationStatus: false,
    };
    this.storage = new NbdStorage(this);
  }

  /** Open an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://). */
  static async open(uri: string, options: OpenNbdOptions = {}): Promise<NbdBlockDevice> {
    const parsed = parseNbdUri(uri);
    const co = await clientOptionsForUri(parsed, options.tls);
    if (options.connectTimeoutMs !== undefined) co.connectTimeoutMs = options.connectTimeoutMs;
    const client = await NbdClient.connect(co);
    return new NbdBlockDevice(client, qemuNbdFilename(parsed), options.readOnly ?? false);
  }

  /** Wrap an already negotiated client. */
  static fromClient(client: NbdClient, filename: string, readOnly = false): NbdBlockDevice {
    return new NbdBlockDevice(client, filename, readOnly);
  }

  get size(): number {
    return this.client.size;
  }

  #checkWritable(what: string): void {
    if (this.#readOnly) {
      throw new EnvironmentError(`${what}: '${this.filename}' is read-only`, { errno: 'EROFS' });
    }
  }

  /** Split [offset, offset+length) into pieces of at most `max` and run them concurrently. */
  async #split(
    offset: number,
    length: number,
    max: number,
    fn: (offset: number, length: number, at: number) => Promise<void>,
  ): Promise<void> {
    if (length <= max) return fn(offset, length, 0);
    const jobs: Promise<void>[] = [];
    for (let at = 0; at < length; at += max)
      jobs.push(fn(offset + at, Math.min(max, length - at), at));
    await Promise.all(jobs);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    assertRange('read', offset, buf.length, this.size);
    if (buf.length === 0) return;
    await this.#split(offset, buf.length, this.client.maxRequest, (off, len, at) =>
      this.client.readInto(buf.subarray(at, at + len), off),
    );
  }

  async write(buf: Uint8Array, offset: number, options: WriteOptions = {}): Promise<void> {
    assertRange('write', offset, buf.length, this.size);
    this.#checkWritable('write');
    if (buf.length === 0) return;
    const nativeFua = (this.client.flags & NBD_FLAG_SEND_FUA) !== 0;
    const fua = (options.fua ?? false) && nativeFua;
    await this.#split(offset, buf.length, this.client.maxRequest, (off, len, at) =>
      this.client.write(buf.subarray(at, at + len), off, fua),
    );
    if (options.fua && !nativeFua) await this.flush();
  }

  async writeZeroes(
    offset: number,
    length: number,
    options: WriteZeroesOptions = {},
  ): Promise<void> {
    assertRange('write zeroes', offset, length, this.size);
    this.#checkWritable('write zeroes');
    if (length === 0) return;
    const f = this.client.flags;
    if (f & NBD_FLAG_SEND_WRITE_ZEROES) {
      if (options.noFallback && !(f & NBD_FLAG_SEND_FAST_ZERO)) {
        throw new NotSupportedError('NBD server does not support fast zeroing');
      }
      const fua = (options.fua ?? false) && (f & NBD_FLAG_SEND_FUA) !== 0;
      await this.#split(offset, length, MAX_EFFECT, (off, len) =>
        this.client.writeZeroes(off, len, {
          fua,
          noHole: !options.mayUnmap,
          fastZero: options.noFallback ?? false,
        }),
      );
      if (options.fua && !(f & NBD_FLAG_SEND_FUA)) await this.flush();
      return;
    }
    if (options.noFallback) throw new NotSupportedError('NBD server does not support WRITE_ZEROES');
    for (let pos = offset; pos < offset + length;) {
      const n = Math.min(ZERO_BUF.length, offset + length - pos);
      await this.client.write(ZERO_BUF.subarray(0, n), pos);
      pos += n;
    }
    if (options.fua) await this.flush();
  }

  async discard(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    assertRange('discard', offset, length, this.size);
    this.#checkWritable('discard');
    if (length === 0 || !(this.client.flags & NBD_FLAG_SEND_TRIM)) return;
    const fua = (options.fua ?? false) && (this.client.flags & NBD_FLAG_SEND_FUA) !== 0;
    await this.#split(offset, length, MAX_EFFECT, (off, len) => this.client.trim(off, len, fua));
  }

  async flush(): Promise<void> {
    if (this.client.flags & NBD_FLAG_SEND_FLUSH) await this.client.flush();
  }

  async blockStatus(
    offset: number,
    length: number,
    options: BlockStatusOptions = {},
  ): Promise<BlockExtent[]> {
    assertRange('block status', offset, length, this.size);
    if (length === 0) return [];
    const base = (e: { offset: number; length: number; data: boolean; zero: boolean }) => ({
      ...e,
      allocated: true,
      depth: 0,
      hostOffset: e.offset,
      file: this.filename,
    });
    if (!this.client.info.contexts.has(CONTEXT_BASE_ALLOCATION)) {
      return [base({ offset, length, data: true, zero: false })];
    }
    const reqLen = Math.min(length, MAX_EFFECT);
    const status = await this.client.blockStatus(offset, reqLen, options.maxExtents === 1);
    const extents = status.get(CONTEXT_BASE_ALLOCATION);
    if (!extents || extents.length === 0) {
      throw new EnvironmentError(`NBD server sent no base:allocation status at offset ${offset}`);
    }
    const out: BlockExtent[] = [];
    let pos = offset;
    for (const e of extents) {
      const n = Math.min(e.length, offset + length - pos);
      if (n <= 0) break;
      out.push(
        base({
          offset: pos,
          length: n,
          data: (e.flags & NBD_STATE_HOLE) === 0,
          zero: (e.flags & NBD_STATE_ZERO) !== 0,
        }),
      );
      pos += n;
      if (options.maxExtents !== undefined && out.length >= options.maxExtents) break;
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.client.close();
  }
}

/** The Storage view of an export: guest bytes are the only bytes there are. */
class NbdStorage implements Storage {
  readonly #dev: NbdBlockDevice;
  constructor(dev: NbdBlockDevice) {
    this.#dev = dev;
  }
  get filename(): string {
    return this.#dev.filename;
  }
  get readOnly(): boolean {
    return this.#dev.capabilities.readOnly;
  }
  async size(): Promise<number> {
    return this.#dev.size;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.#dev.read(buf, offset);
  }
  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.#dev.write(buf, offset);
  }
  async truncate(): Promise<void> {
    throw new NotSupportedError('Cannot resize an NBD export');
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    return this.#dev.writeZeroes(offset, length, { mayUnmap });
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#dev.discard(offset, length);
  }
  flush(): Promise<void> {
    return this.#dev.flush();
  }
  /** NBD has no notion of host allocation (qemu-img info prints "disk size: unavailable"). */
  async allocatedSize(): Promise<number> {
    throw new NotSupportedError('disk size unavailable over NBD');
  }
  async close(): Promise<void> {
    await this.#dev.close();
  }
}
