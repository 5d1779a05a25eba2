// Client side of the fixed newstyle handshake: STARTTLS when asked, structured replies, metadata
// contexts, then NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME for servers without GO), and
// the export listing behind `vmforge-nbd -L`. Error texts follow qemu's nbd/client.c.

import { ProtocolError } from '../core/index.js';
import type { Channel } from './channel.js';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME,
  NBD_INIT_PASSWD,
  NBD_CLISERV_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_OPTION_REPLY_HEADER_SIZE,
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
  NBD_REP_ERR_PLATFORM,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_FLAG_HAS_FLAGS,
  CONTEXT_BASE_ALLOCATION,
  isReplyError,
  nameOfOpt,
  nameOfRep,
} from './protocol.js';
import type { TlsCreds } from './tls.js';
import { clientTlsUpgrade } from './tls.js';
import {
  decodeGreeting,
  decodeInfoReply,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeRepServer,
  decodeString,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeString,
  type BlockSizes,
} from './wire.js';

export interface ClientTlsConfig {
  creds: TlsCreds;
  hostname?: string | undefined;
  verifyPeer?: boolean | undefined;
}

export interface ClientHandshakeOptions {
  exportName?: string;
  /** Start TLS and refuse to continue without it. */
  tls?: ClientTlsConfig | undefined;
  /** @default true */
  structuredReplies?: boolean;
  /** Metadata contexts to select. @default ['base:allocation'] */
  metaContexts?: readonly string[];
}

export interface ClientNegotiated {
  exportName: string;
  size: number;
  flags: number;
  structured: boolean;
  tls: boolean;
  blockSizes: BlockSizes | undefined;
  description: string | undefined;
  /** Selected metadata contexts: name -> id. */
  contexts: Map<string, number>;
}

export interface ExportListEntry {
  name: string;
  description: string;
  size?: number;
  flags?: number;
  blockSizes?: BlockSizes;
  contexts: string[];
}

/** The server answered an option with an error reply. */
export class NbdOptionError extends ProtocolError {
  override name = 'NbdOptionError';
  readonly option: number;
  readonly replyType: number;
  readonly serverMessage: string;
  constructor(option: number, replyType: number, serverMessage: string) {
    super(optionErrorText(option, replyType, serverMessage), { code: 'VMF_NBD_OPTION' });
    this.option = option;
    this.replyType = replyType;
    this.serverMessage = serverMessage;
  }
}

function optionErrorText(option: number, type: number, msg: string): string {
  const o = `option ${option} (${nameOfOpt(option)})`;
  let text: string;
  switch (type) {
    case NBD_REP_ERR_UNSUP:
      text = `Server does not support ${o}`;
      break;
    case NBD_REP_ERR_POLICY:
      text = `Denied by server for ${o}`;
      break;
    case NBD_REP_ERR_INVALID:
      text = `Invalid parameters for ${o}`;
      break;
    case NBD_REP_ERR_PLATFORM:
      text = `Server lacks support for ${o}`;
      break;
    case NBD_REP_ERR_TLS_REQD:
      text = `TLS negotiation required before ${o}`;
      break;
    case NBD_REP_ERR_UNKNOWN:
      text = 'Requested export not available';
      break;
    case NBD_REP_ERR_SHUTDOWN:
      text = `Server shutting down before ${o}`;
      break;
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
      text = `Server requires INFO_BLOCK_SIZE for ${o}`;
      break;
    default:
      text = `Unknown error code when asking for ${o}`;
  }
  return msg ? `${text} (server reported: ${msg})` : text;
}

/** Replies longer than this are not believed (a hostile server must not exhaust memory). */
const MAX_REPLY_PAYLOAD = 16 * 1024 * 1024;

class ClientHandshake {
  readonly #ch: Channel;
  #noZeroes = false;
  tls = false;

  constructor(channel: Channel) {
    this.#ch = channel;
  }

  async greet(): Promise<void> {
    const g = decodeGreeting(await this.#ch.read(18));
    if (g.passwd !== NBD_INIT_PASSWD) {
      throw new ProtocolError(`Bad initial magic received: 0x${g.passwd.toString(16)}`);
    }
    if (g.magic === NBD_CLISERV_MAGIC) {
      throw new ProtocolError('Server uses oldstyle negotiation, which is not supported');
    }
    if (g.magic !== NBD_OPTS_MAGIC) {
      throw new ProtocolError(`Bad server magic received: 0x${g.magic.toString(16)}`);
    }
    if (!(g.flags & NBD_FLAG_FIXED_NEWSTYLE)) {
      throw new ProtocolError('Server does not support fixed newstyle negotiation');
    }
    let flags = NBD_FLAG_C_FIXED_NEWSTYLE;
    if (g.flags & NBD_FLAG_NO_ZEROES) {
      flags |= NBD_FLAG_C_NO_ZEROES;
      this.#noZeroes = true;
    }
    this.#ch.write(encodeClientFlags(flags));
  }

  send(option: number, payload?: Uint8Array): void {
    this.#ch.write(encodeOption(option, payload));
  }

  /** One reply to `option`; error replies throw NbdOptionError. */
  async reply(option: number): Promise<{ type: number; payload: Uint8Array }> {
    const h = decodeOptionReplyHeader(await this.#ch.read(NBD_OPTION_REPLY_HEADER_SIZE));
    if (h.magic !== NBD_REP_MAGIC) throw new ProtocolError('Unexpected option reply magic');
    if (h.option !== option) {
      throw new ProtocolError(
        `Unexpected option type ${h.option} (${nameOfOpt(h.option)}), expected ${option} (${nameOfOpt(option)})`,
      );
    }
    if (h.length > MAX_REPLY_PAYLOAD) {
      throw new ProtocolError(
        `server reply of ${h.length} bytes to ${nameOfOpt(option)} is too long`,
      );
    }
    const payload = await this.#ch.read(h.length);
    if (isReplyError(h.type)) throw new NbdOptionError(option, h.type, decodeString(payload));
    return { type: h.type, payload };
  }

  async expectAck(option: number): Promise<void> {
    const r = await this.reply(option);
    if (r.type !== NBD_REP_ACK) {
      throw new ProtocolError(
        `Unexpected reply type ${r.type} (${nameOfRep(r.type)}), expected ${NBD_REP_ACK} (ack)`,
      );
    }
  }

  async startTls(config: ClientTlsConfig): Promise<void> {
    this.send(NBD_OPT_STARTTLS);
    try {
      await this.expectAck(NBD_OPT_STARTTLS);
    } catch (err) {
      if (err instanceof NbdOptionError) {
        throw new ProtocolError('Server does not support STARTTLS', { cause: err });
      }
      throw err;
    }
    await this.#ch.flushed();
    const secure = await clientTlsUpgrade(this.#ch.release(), config.creds, {
      hostname: config.hostname,
      verifyPeer: config.verifyPeer,
    });
    this.#ch.adopt(secure);
    this.tls = true;
  }

  /** STRUCTURED_REPLY: true on ACK, false when the server declines. */
  async structured(): Promise<boolean> {
    this.send(NBD_OPT_STRUCTURED_REPLY);
    try {
      await this.expectAck(NBD_OPT_STRUCTURED_REPLY);
      return true;
    } catch (err) {
      if (err instanceof NbdOptionError) return false;
      throw err;
    }
  }

  /** Query contexts (LIST or SET); returns name -> id. Declined by the server: empty. */
  async metaContexts(
    option: number,
    exportName: string,
    queries: readonly string[],
  ): Promise<Map<string, number>> {
    this.send(option, encodeMetaContextRequest(exportName, queries));
    const out = new Map<string, number>();
    for (;;) {
      let r;
      try {
        r = await this.reply(option);
      } catch (err) {
        if (err instanceof NbdOptionError) return new Map();
        throw err;
      }
      if (r.type === NBD_REP_ACK) return out;
      if (r.type !== NBD_REP_META_CONTEXT) {
        throw new ProtocolError(
          `Unexpected reply type ${r.type} (${nameOfRep(r.type)}) to ${nameOfOpt(option)}`,
        );
      }
      const { id, name } = decodeRepMetaContext(r.payload);
      out.set(name, id);
    }
  }

  /** INFO or GO. Returns undefined if the server does not know the option (ERR_UNSUP). */
  async infoOrGo(
    option: number,
    exportName: string,
  ): Promise<
    { size: number; flags: number; sizes?: BlockSizes; description?: string } | undefined
  > {
    this.send(option, encodeInfoRequest(exportName, [NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]));
    let size: number | undefined;
    let flags = 0;
    let sizes: BlockSizes | undefined;
    let description: string | undefined;
    for (;;) {
      let r;
      try {
        r = await this.reply(option);
      } catch (err) {
        if (err instanceof NbdOptionError && err.replyType === NBD_REP_ERR_UNSUP) return undefined;
        throw err;
      }
      if (r.type === NBD_REP_ACK) {
        if (size === undefined) throw new ProtocolError('broken server omitted NBD_INFO_EXPORT');
        const out: { size: number; flags: number; sizes?: BlockSizes; description?: string } = {
          size,
          flags,
        };
        if (sizes) out.sizes = sizes;
        if (description !== undefined) out.description = description;
        return out;
      }
      if (r.type !== NBD_REP_INFO) {
        throw new ProtocolError(
          `unexpected reply type ${r.type} (${nameOfRep(r.type)}), expected ${NBD_REP_INFO} (info)`,
        );
      }
      const info = decodeInfoReply(r.payload);
      if (info.type === 'export') {
        size = info.size;
        flags = info.flags;
      } else if (info.type === 'block-size') {
        validateBlockSizes(info.sizes);
        sizes = info.sizes;
      } else if (info.type === 'description') {
        description = info.description;
      }
    }
  }

  /** EXPORT_NAME: the last resort for servers without GO; no error path (server hangs up). */
  async exportName(exportName: string): Promise<{ size: number; flags: number }> {
    this.send(NBD_OPT_EXPORT_NAME, encodeString(exportName));
    const head = await this.#ch.read(10).catch((err: unknown) => {
      throw new ProtocolError(
        `server closed the connection: export '${exportName}' not available?`,
        {
          cause: err,
        },
      );
    });
    const v = new DataView(head.buffer, head.byteOffset, 10);
    const big = v.getBigUint64(0);
    if (big > BigInt(Number.MAX_SAFE_INTEGER))
      throw new ProtocolError(`export size ${big} too large`);
    if (!this.#noZeroes) await this.#ch.skip(124);
    return { size: Number(big), flags: v.getUint16(8) };
  }

  async list(): Promise<{ name: string; description: string }[]> {
    this.send(NBD_OPT_LIST);
    const out: { name: string; description: string }[] = [];
    for (;;) {
      const r = await this.reply(NBD_OPT_LIST);
      if (r.type === NBD_REP_ACK) return out;
      if (r.type !== NBD_REP_SERVER) {
        throw new ProtocolError(`Unexpected reply type ${r.type} (${nameOfRep(r.type)}) to list`);
      }
      out.push(decodeRepServer(r.payload));
    }
  }

  abort(): void {
    this.send(NBD_OPT_ABORT);
  }
}

function validateBlockSizes(s: BlockSizes): void {
  const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (!pow2(s.minimum) || s.minimum > 64 * 1024) {
    throw new ProtocolError(`server minimum block size ${s.minimum} is not sensible`);
  }
  if (!pow2(s.preferred) || s.preferred < s.minimum) {
    throw new ProtocolError(`server preferred block size ${s.preferred} is not sensible`);
  }
  if (s.maximum < s.preferred && s.maximum !== 0) {
    throw new ProtocolError(`server maximum block size ${s.maximum} is not sensible`);
  }
}

/** Negotiate an export for transmission. */
export async function clientNegotiate(
  channel: Channel,
  options: ClientHandshakeOptions,
): Promise<ClientNegotiated> {
  const hs = new ClientHandshake(channel);
  const exportName = options.exportName ?? '';
  await hs.greet();
  if (options.tls) await hs.startTls(options.tls);
  const structured = options.structuredReplies === false ? false : await hs.structured();
  let contexts = new Map<string, number>();
  const wanted = options.metaContexts ?? [CONTEXT_BASE_ALLOCATION];
  if (structured && wanted.length > 0) {
    contexts = await hs.metaContexts(NBD_OPT_SET_META_CONTEXT, exportName, wanted);
  }
  const go = await hs.infoOrGo(NBD_OPT_GO, exportName);
  if (go) {
    if (!(go.flags & NBD_FLAG_HAS_FLAGS))
      throw new ProtocolError('server did not set NBD_FLAG_HAS_FLAGS');
    return {
      exportName,
      size: go.size,
      flags: go.flags,
      structured,
      tls: hs.tls,
      blockSizes: go.sizes,
      description: go.description,
      contexts,
    };
  }
  // GO unknown: the server predates it, so it cannot have structured replies either.
  const old = await hs.exportName(exportName);
  return {
    exportName,
    size: old.size,
    flags: old.flags,
    structured: false,
    tls: hs.tls,
    blockSizes: undefined,
    description: undefined,
    contexts: new Map(),
  };
}

/** NBD_OPT_LIST, then INFO and LIST_META_CONTEXT for each export (qemu-nbd -L). */
export async function clientListExports(
  channel: Channel,
  options: { tls?: ClientTlsConfig | undefined },
): Promise<{ structured: boolean; tls: boolean; exports: ExportListEntry[] }> {
  const hs = new ClientHandshake(channel);
  await hs.greet();
  if (options.tls) await hs.startTls(options.tls);
  const structured = await hs.structured();
  const names = await hs.list();
  const exports: ExportListEntry[] = [];
  let infoWorks = true;
  for (const { name, description } of names) {
    const entry: ExportListEntry = { name, description, contexts: [] };
    exports.push(entry);
    if (!infoWorks) continue;
    const info = await hs.infoOrGo(NBD_OPT_INFO, name);
    if (!info) {
      infoWorks = false;
      continue;
    }
    entry.size = info.size;
    entry.flags = info.flags;
    if (info.sizes) entry.blockSizes = info.sizes;
    if (structured) {
      entry.contexts = [...(await hs.metaContexts(NBD_OPT_LIST_META_CONTEXT, name, [])).keys()];
    }
  }
  hs.abort();
  return { structured, tls: hs.tls, exports };
}
