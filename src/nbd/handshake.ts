// Server side of the fixed newstyle handshake (proto.md "Newstyle negotiation", "Option types",
// "TLS support"), with qemu-nbd's behaviour and messages (nbd/server.c nbd_negotiate_options):
//   greeting -> client flags -> options until EXPORT_NAME, or GO answered with ACK.
// Everything the client sends is bounded: option count, option length, name length. A client
// that breaks a MUST is disconnected (HandshakeError); anything else gets an error reply and the
// option loop continues ("error inbound options until the client gets the hint").

import type { Duplex } from 'node:stream';
import { ByteReader, ProtocolError } from '../core/index.js';
import type { Channel } from './channel.js';
import type { NbdExport } from './export.js';
import { blockSizes, transmissionFlags } from './export-flags.js';
import {
  applyQuery,
  emptySelection,
  selectAll,
  selectedContexts,
  type MetaSelection,
} from './meta-context.js';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME,
  NBD_MAX_PAYLOAD,
  NBD_MAX_STRING_SIZE,
  NBD_OPTION_HEADER_SIZE,
  NBD_OPTS_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_BLOCK_SIZE_REQD,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  nameOfOpt,
} from './protocol.js';
import {
  decodeClientFlags,
  decodeOptionHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
} from './wire.js';

/** Limits on what a client may send before transmission (style.md §5; nbdkit, qemu). */
export interface HandshakeLimits {
  /** Options per connection before we give up on the client. @default 256 */
  maxOptions: number;
  /** Largest option payload we buffer and parse; longer known options get ERR_TOO_BIG. @default 64 KiB */
  maxOptionLength: number;
}

export const DEFAULT_HANDSHAKE_LIMITS: HandshakeLimits = {
  maxOptions: 256,
  maxOptionLength: 64 * 1024,
};

/** Option payloads beyond this are a DoS: disconnect instead of draining (qemu's limit). */
const ABSOLUTE_MAX_OPTION_LENGTH = NBD_MAX_PAYLOAD;

export interface ServerTls {
  /** Turn the plain socket into a TLS server socket; resolves once the TLS handshake is done. */
  upgrade(socket: Duplex): Promise<Duplex>;
}

export interface HandshakeConfig {
  readonly exports: ReadonlyMap<string, NbdExport>;
  /** TLS credentials; when set, TLS is required before anything else (FORCEDTLS). */
  readonly tls: ServerTls | undefined;
  readonly multipleClients: boolean;
  readonly limits: HandshakeLimits;
  isShuttingDown(): boolean;
}

export interface Negotiated {
  readonly export: NbdExport;
  readonly structured: boolean;
  /** Selected metadata contexts (only if selected for this export). */
  readonly meta: MetaSelection | undefined;
  /** Transmission flags sent to the client. */
  readonly flags: number;
  readonly tls: boolean;
  /** The client promised to honour INFO_BLOCK_SIZE (minimum block size it was told). */
  readonly minimumBlockSize: number;
}

/** The client broke the protocol; the connection must be dropped. */
export class HandshakeError extends ProtocolError {
  override name = 'HandshakeError';
  constructor(message: string) {
    super(message, { code: 'VMF_NBD_HANDSHAKE' });
  }
}

/** An option's payload is malformed: answer NBD_REP_ERR_INVALID with this message. */
class OptionInvalid extends Error {}

/** Payload reader for one option with qemu's "Inconsistent lengths" semantics. */
function optionReader(payload: Uint8Array, option: number): ByteReader {
  return new ByteReader(
    payload,
    nameOfOpt(option),
    0,
    () => new OptionInvalid(`Inconsistent lengths in option ${nameOfOpt(option)}`) as never,
  );
}

/** qemu's nbd_sanitize_name: names over 80 bytes are cut in error messages. */
function sanitizeName(name: string): string {
  return name.length < 80 ? name : `${name.slice(0, 80)}...`;
}

function readName(r: ByteReader, option: number): { raw: Uint8Array; name: string } {
  const len = r.u32('name length');
  if (len > NBD_MAX_STRING_SIZE) throw new OptionInvalid(`Invalid name length: ${len}`);
  const raw = r.bytes(len, 'name');
  if (raw.includes(0)) {
    throw new OptionInvalid(`Unexpected embedded NUL in option ${nameOfOpt(option)}`);
  }
  return { raw, name: decodeString(raw) };
}

/**
 * Run the handshake on `channel`. Resolves with the negotiated state, or 'aborted' when the
 * client sent NBD_OPT_ABORT. Rejects with HandshakeError (protocol violation) or
 * ConnectionClosedError (peer went away).
 */
export async function negotiate(
  channel: Channel,
  config: HandshakeConfig,
): Promise<Negotiated | 'aborted'> {
  return new ServerHandshake(channel, config).run();
}

class ServerHandshake {
  readonly #ch: Channel;
  readonly #cfg: HandshakeConfig;
  #fixed = false;
  #noZeroes = false;
  #structured = false;
  #tlsDone = false;
  #meta: MetaSelection | undefined;
  #option = 0;

  constructor(channel: Channel, config: HandshakeConfig) {
    this.#ch = channel;
    this.#cfg = config;
  }

  async run(): Promise<Negotiated | 'aborted'> {
    this.#ch.write(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    let flags = decodeClientFlags(await this.#ch.read(4));
    if (flags & NBD_FLAG_C_FIXED_NEWSTYLE) this.#fixed = true;
    if (flags & NBD_FLAG_C_NO_ZEROES) this.#noZeroes = true;
    flags &= ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    // proto.md "Client flags": the server MUST drop the connection on unknown flags.
    if (flags !== 0) {
      throw new HandshakeError(`Unknown client flags 0x${(flags >>> 0).toString(16)} received`);
    }

    for (let count = 0; ; count++) {
      const header = decodeOptionHeader(await this.#ch.read(NBD_OPTION_HEADER_SIZE));
      if (header.magic !== NBD_OPTS_MAGIC) throw new HandshakeError('Bad magic received');
      this.#option = header.option;
      if (header.length > ABSOLUTE_MAX_OPTION_LENGTH) {
        throw new HandshakeError(
          `len (${header.length}) is larger than max len (${ABSOLUTE_MAX_OPTION_LENGTH})`,
        );
      }
      if (count >= this.#cfg.limits.maxOptions) {
        throw new HandshakeError(
          `client sent more than ${this.#cfg.limits.maxOptions} options without selecting an export`,
        );
      }
      const result = await this.#handleOption(header.option, header.length);
      if (result !== undefined) return result;
    }
  }

  // --- replies ---------------------------------------------------------------------------

  #reply(type: number, payload?: Uint8Array): void {
    this.#ch.write(encodeOptionReply(this.#option, type, payload));
  }

  #replyError(type: number, message: string): void {
    this.#reply(type, new TextEncoder().encode(message));
  }

  /** Discard the rest of the option, then answer with an error (qemu nbd_opt_drop). */
  async #drop(length: number, type: number, message: string): Promise<void> {
    await this.#ch.skip(length);
    this.#replyError(type, message);
  }

  async #rejectLength(length: number): Promise<void> {
    await this.#drop(
      length,
      NBD_REP_ERR_INVALID,
      `option '${nameOfOpt(this.#option)}' has unexpected length`,
    );
  }

  /** Read an option payload we must parse; undefined (after replying) if it is too long. */
  async #payload(length: number): Promise<Uint8Array | undefined> {
    if (length > this.#cfg.limits.maxOptionLength) {
      await this.#drop(
        length,
        NBD_REP_ERR_TOO_BIG,
        `option '${nameOfOpt(this.#option)}' is too long (${length} bytes)`,
      );
      return undefined;
    }
    return this.#ch.read(length);
  }

  // --- option dispatch -------------------------------------------------------------------

  async #handleOption(option: number, length: number): Promise<Negotiated | 'aborted' | undefined> {
    if (this.#cfg.tls && !this.#tlsDone) return this.#beforeTls(option, length);
    if (!this.#fixed) {
      // Non-fixed newstyle clients only know EXPORT_NAME; anything else cannot be answered.
      if (option === NBD_OPT_EXPORT_NAME) return this.#exportName(length);
      throw new HandshakeError(`Unsupported option ${option} (${nameOfOpt(option)})`);
    }
    if (this.#cfg.isShuttingDown() && option !== NBD_OPT_ABORT) {
      if (option === NBD_OPT_EXPORT_NAME) throw new HandshakeError('server is shutting down');
      await this.#drop(length, NBD_REP_ERR_SHUTDOWN, 'Server is shutting down');
      return undefined;
    }
    switch (option) {
      case NBD_OPT_LIST:
        if (length) await this.#rejectLength(length);
        else this.#list();
        return undefined;
      case NBD_OPT_ABORT:
        // proto.md: reply ACK, but tolerate a client that hangs up without reading it.
        await this.#ch.skip(length).catch(() => undefined);
        this.#reply(NBD_REP_ACK);
        return 'aborted';
      case NBD_OPT_EXPORT_NAME:
        return this.#exportName(length);
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.#infoOrGo(option, length);
      case NBD_OPT_STARTTLS:
        if (length) await this.#rejectLength(length);
        else if (this.#tlsDone) this.#replyError(NBD_REP_ERR_INVALID, 'TLS already enabled');
        else this.#replyError(NBD_REP_ERR_POLICY, 'TLS not configured');
        return undefined;
      case NBD_OPT_STRUCTURED_REPLY:
        if (length) {
          await this.#rejectLength(length);
        } else if (this.#structured) {
          this.#replyError(NBD_REP_ERR_INVALID, 'structured reply already negotiated');
        } else {
          this.#structured = true;
          this.#reply(NBD_REP_ACK);
        }
        return undefined;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        await this.#metaContext(option, length);
        return undefined;
      default:
        await this.#drop(
          length,
          NBD_REP_ERR_UNSUP,
          `Unsupported option ${option >>> 0} (${nameOfOpt(option)})`,
        );
        return undefined;
    }
  }

  /** FORCEDTLS (proto.md "TLS support"): only STARTTLS and ABORT before TLS. */
  async #beforeTls(option: number, length: number): Promise<'aborted' | undefined> {
    const hex = `0x${(option >>> 0).toString(16)}`;
    if (!this.#fixed) throw new HandshakeError(`Unsupported option ${hex}`);
    if (option === NBD_OPT_STARTTLS) {
      if (length) {
        // A client that cannot start TLS correctly is dropped unconditionally (qemu).
        await this.#rejectLength(length);
        throw new HandshakeError(`option '${nameOfOpt(option)}' has unexpected length`);
      }
      this.#reply(NBD_REP_ACK);
      await this.#ch.flushed();
      const secure = await this.#cfg.tls!.upgrade(this.#ch.release());
      this.#ch.adopt(secure);
      this.#tlsDone = true;
      return undefined;
    }
    if (option === NBD_OPT_EXPORT_NAME) {
      // No way to return an error to the client (proto.md): drop the connection.
      throw new HandshakeError(`Option ${hex} not permitted before TLS`);
    }
    if (option === NBD_OPT_ABORT) {
      await this.#ch.skip(length).catch(() => undefined);
      this.#replyError(NBD_REP_ERR_TLS_REQD, `Option ${hex} not permitted before TLS`);
      return 'aborted';
    }
    await this.#drop(length, NBD_REP_ERR_TLS_REQD, `Option ${hex} not permitted before TLS`);
    return undefined;
  }

  #list(): void {
    for (const exp of this.#cfg.exports.values()) {
      this.#reply(NBD_REP_SERVER, encodeRepServer(exp.name, exp.description ?? ''));
    }
    this.#reply(NBD_REP_ACK);
  }

  #negotiated(exp: NbdExport, minimumBlockSize: number): Negotiated {
    const meta = this.#meta?.exportName === exp.name ? this.#meta : undefined;
    return {
      export: exp,
      structured: this.#structured,
      meta,
      flags: this.#flags(exp),
      tls: this.#tlsDone,
      minimumBlockSize,
    };
  }

  #flags(exp: NbdExport): number {
    return transmissionFlags(exp, {
      structured: this.#structured,
      multipleClients: this.#cfg.multipleClients,
    });
  }

  async #exportName(length: number): Promise<Negotiated> {
    if (length > NBD_MAX_STRING_SIZE) throw new HandshakeError('Bad length received');
    const name = decodeString(await this.#ch.read(length));
    const exp = this.#cfg.exports.get(name);
    // EXPORT_NAME has no error reply: an unknown export ends the connection (proto.md).
    if (!exp) throw new HandshakeError(`export '${sanitizeName(name)}' not found`);
    this.#ch.write(encodeExportNameReply(exp.device.size, this.#flags(exp), this.#noZeroes));
    return this.#negotiated(exp, 1);
  }

  async #infoOrGo(option: number, length: number): Promise<Negotiated | undefined> {
    const payload = await this.#payload(length);
    if (!payload) return undefined;
    let raw: Uint8Array;
    let name: string;
    let sendName = false;
    let blockSizeRequested = false;
    try {
      const r = optionReader(payload, option);
      ({ raw, name } = readName(r, option));
      const requests = r.u16('request count');
      for (let i = 0; i < requests; i++) {
        const info = r.u16('info request');
        // Unknown info requests are ignored (proto.md); EXPORT is sent regardless.
        if (info === NBD_INFO_NAME) sendName = true;
        else if (info === NBD_INFO_BLOCK_SIZE) blockSizeRequested = true;
      }
      if (r.remaining) {
        throw new OptionInvalid(`option '${nameOfOpt(option)}' has unexpected length`);
      }
    } catch (err) {
      if (err instanceof OptionInvalid) {
        this.#replyError(NBD_REP_ERR_INVALID, err.message);
        return undefined;
      }
      throw err;
    }

    const exp = this.#cfg.exports.get(name);
    if (!exp) {
      this.#replyError(NBD_REP_ERR_UNKNOWN, `export '${sanitizeName(name)}' not present`);
      return undefined;
    }
    if (sendName) this.#reply(NBD_REP_INFO, encodeInfoName(raw));
    if (exp.description !== undefined) {
      this.#reply(NBD_REP_INFO, encodeInfoDescription(exp.description));
    }
    // Block sizes are always sent; the minimum is only imposed on clients that will obey it.
    const obeys = option === NBD_OPT_INFO || blockSizeRequested;
    const sizes = blockSizes(exp, obeys);
    this.#reply(NBD_REP_INFO, encodeInfoBlockSize(sizes));
    this.#reply(NBD_REP_INFO, encodeInfoExport(exp.device.size, this.#flags(exp)));

    // INFO from a client that did not ask for block sizes, on an export where alignment matters,
    // gets an error; GO tolerates every client (qemu nbd_negotiate_handle_info).
    if (option === NBD_OPT_INFO && !blockSizeRequested && sizes.minimum > 1) {
      this.#replyError(
        NBD_REP_ERR_BLOCK_SIZE_REQD,
        'request NBD_INFO_BLOCK_SIZE to use this export',
      );
      return undefined;
    }
    this.#reply(NBD_REP_ACK);
    return option === NBD_OPT_GO ? this.#negotiated(exp, sizes.minimum) : undefined;
  }

  async #metaContext(option: number, length: number): Promise<void> {
    const list = option === NBD_OPT_LIST_META_CONTEXT;
    if (!list && !this.#structured) {
      await this.#drop(
        length,
        NBD_REP_ERR_INVALID,
        `request option '${nameOfOpt(option)}' when structured reply is not negotiated`,
      );
      return;
    }
    // SET replaces the selection even when it fails (proto.md).
    if (!list) this.#meta = undefined;
    const payload = await this.#payload(length);
    if (!payload) return;
    let sel: MetaSelection;
    let exp: NbdExport | undefined;
    try {
      const r = optionReader(payload, option);
      const { name } = readName(r, option);
      exp = this.#cfg.exports.get(name);
      if (!exp) {
        this.#replyError(NBD_REP_ERR_UNKNOWN, `export '${sanitizeName(name)}' not present`);
        return;
      }
      sel = emptySelection(name, exp);
      const queries = r.u32('query count');
      if (list && queries === 0) selectAll(sel, exp);
      for (let i = 0; i < queries; i++) {
        const len = r.u32('query length');
        // Over-long queries cannot name any context: skip them (qemu).
        const bytes = r.bytes(len, 'query');
        if (len > NBD_MAX_STRING_SIZE) continue;
        if (bytes.includes(0)) {
          throw new OptionInvalid(`Unexpected embedded NUL in option ${nameOfOpt(option)}`);
        }
        applyQuery(sel, decodeString(bytes), list, exp);
      }
      if (r.remaining) {
        throw new OptionInvalid(`option '${nameOfOpt(option)}' has unexpected length`);
      }
    } catch (err) {
      if (err instanceof OptionInvalid) {
        this.#replyError(NBD_REP_ERR_INVALID, err.message);
        return;
      }
      throw err;
    }
    for (const ctx of selectedContexts(sel, exp)) {
      // proto.md: ids in LIST replies are reserved and SHOULD be zero.
      this.#reply(NBD_REP_META_CONTEXT, encodeRepMetaContext(list ? 0 : ctx.id, ctx.name));
    }
    this.#reply(NBD_REP_ACK);
    if (!list) this.#meta = sel;
  }
}
