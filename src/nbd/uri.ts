// NBD URIs (NetworkBlockDevice/nbd doc/uri.md):
//   nbd://host[:port]/export      nbds://...          (TCP; nbds = TLS required)
//   nbd+unix:///export?socket=P   nbds+unix:///...    (unix socket)
// The export name is the path without its leading '/', percent-decoded ("nbd://h//disk" is
// "/disk"). Query parameters: socket, tls-type, tls-hostname, tls-verify-peer, plus libnbd's
// tls-certificates, tls-psk-file and tls-username; unknown ones are refused (uri.md: "SHOULD be
// diagnosed") except the experimental x-* ones.

import { InvalidArgumentError } from '../core/index.js';
import { NBD_DEFAULT_PORT } from './protocol.js';

export interface NbdUri {
  /** TLS is required (nbds, nbds+unix). */
  tls: boolean;
  transport: 'tcp' | 'unix';
  /** TCP host (brackets removed from IPv6 literals). */
  host?: string;
  port?: number;
  /** Unix socket path; a leading NUL means the abstract namespace. */
  socket?: string;
  exportName: string;
  /** userinfo: the PSK identity (libnbd). */
  username?: string;
  tlsType?: 'anon' | 'x509' | 'psk';
  tlsHostname?: string;
  tlsVerifyPeer?: boolean;
  /** Directory with ca-cert.pem, client-cert.pem, client-key.pem (libnbd). */
  tlsCertificates?: string;
  /** psktool keys file (libnbd). */
  tlsPskFile?: string;
}

const SCHEMES: Record<string, { tls: boolean; transport: 'tcp' | 'unix' }> = {
  nbd: { tls: false, transport: 'tcp' },
  nbds: { tls: true, transport: 'tcp' },
  'nbd+unix': { tls: false, transport: 'unix' },
  'nbds+unix': { tls: true, transport: 'unix' },
};

/** True when `text` looks like an NBD URI (and should be opened through the NBD client). */
export function isNbdUri(text: string): boolean {
  return /^nbds?(\+unix)?:\/\//i.test(text);
}

function decode(part: string, what: string, uri: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new InvalidArgumentError(`invalid NBD URI '${uri}': bad percent-encoding in ${what}`);
  }
}

export function parseNbdUri(uri: string): NbdUri {
  const bad = (why: string) => new InvalidArgumentError(`invalid NBD URI '${uri}': ${why}`);
  // RFC 3986 appendix B, split into scheme, authority, path, query (fragment dropped).
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$/.exec(uri);
  if (!m) throw bad('expected scheme://[authority]/[export][?query]');
  const scheme = SCHEMES[m[1]!.toLowerCase()];
  if (!scheme) throw bad(`unknown scheme '${m[1]}' (nbd, nbds, nbd+unix, nbds+unix)`);
  const out: NbdUri = { tls: scheme.tls, transport: scheme.transport, exportName: '' };

  let authority = m[2]!;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    out.username = decode(authority.slice(0, at), 'userinfo', uri);
    authority = authority.slice(at + 1);
  }
  const path = m[3]!;
  if (path) out.exportName = decode(path.slice(1), 'export name', uri);

  if (scheme.transport === 'tcp') {
    const hp = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(authority);
    if (!hp || !hp[1]) throw bad('missing host');
    out.host = decode(hp[1].replace(/^\[|\]$/g, ''), 'host', uri);
    const port = hp[2] ? Number(hp[2]) : NBD_DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`invalid port '${hp[2]}'`);
    out.port = port;
  } else if (authority) {
    // uri.md: the authority "SHOULD NOT be used for Unix domain socket connections".
    throw bad('a unix socket URI takes no host (use nbd+unix:///export?socket=PATH)');
  }

  for (const pair of (m[4] ?? '').split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = decode(eq < 0 ? pair : pair.slice(0, eq), 'query', uri);
    const value = decode(eq < 0 ? '' : pair.slice(eq + 1), 'query', uri);
    switch (key) {
      case 'socket':
        if (scheme.transport !== 'unix') throw bad("'socket' is only valid with nbd+unix");
        out.socket = value;
        break;
      case 'tls-type':
        if (value !== 'anon' && value !== 'x509' && value !== 'psk') {
          throw bad(`tls-type must be anon, x509 or psk, not '${value}'`);
        }
        out.tlsType = value;
        break;
      case 'tls-hostname':
        out.tlsHostname = value;
        break;
      case 'tls-verify-peer':
        if (value !== '0' && value !== '1' && value !== 'true' && value !== 'false') {
          throw bad(`tls-verify-peer must be 0 or 1, not '${value}'`);
        }
        out.tlsVerifyPeer = value === '1' || value === 'true';
        break;
      case 'tls-certificates':
        out.tlsCertificates = value;
        break;
      case 'tls-psk-file':
        out.tlsPskFile = value;
        break;
      case 'tls-username':
        out.username = value;
        break;
      default:
        if (!key.startsWith('x-')) throw bad(`unknown query parameter '${key}'`);
    }
  }
  if (scheme.transport === 'unix' && !out.socket) throw bad("missing 'socket' query parameter");
  return out;
}

/** Format a URI the way qemu-img and nbdinfo print them. */
export function formatNbdUri(
  u: Pick<NbdUri, 'tls' | 'transport' | 'host' | 'port' | 'socket' | 'exportName'>,
): string {
  const scheme = `${u.tls ? 'nbds' : 'nbd'}${u.transport === 'unix' ? '+unix' : ''}`;
  const name = encodeURIComponent(u.exportName).replace(/%2F/g, '/');
  if (u.transport === 'unix') {
    return `${scheme}:///${name}?socket=${encodeURIComponent(u.socket ?? '').replace(/%2F/g, '/')}`;
  }
  const host = u.host?.includes(':') ? `[${u.host}]` : (u.host ?? '');
  const port = u.port !== undefined && u.port !== NBD_DEFAULT_PORT ? `:${u.port}` : '';
  return `${scheme}://${host}${port}/${name}`;
}

/**
 * The name QEMU gives an NBD node (block/nbd.c nbd_refresh_filename), which qemu-img prints as
 * "image:": no third slash without an export, the port always spelled out, nothing encoded.
 */
export function qemuNbdFilename(
  u: Pick<NbdUri, 'transport' | 'host' | 'port' | 'socket' | 'exportName'>,
): string {
  if (u.transport === 'unix') {
    return u.exportName
      ? `nbd+unix:///${u.exportName}?socket=${u.socket ?? ''}`
      : `nbd+unix://?socket=${u.socket ?? ''}`;
  }
  const hostPort = `${u.host ?? ''}:${u.port ?? NBD_DEFAULT_PORT}`;
  return u.exportName ? `nbd://${hostPort}/${u.exportName}` : `nbd://${hostPort}`;
}
