// TLS credentials laid out as QEMU expects them (crypto/tlscredsx509.c, crypto/tlscredspsk.c):
//   x509: DIR/ca-cert.pem, DIR/server-cert.pem + DIR/server-key.pem (server) or
//         DIR/client-cert.pem + DIR/client-key.pem (client, optional), DIR/ca-crl.pem (optional);
//         verify-peer (default on) makes the server demand a client certificate signed by the CA.
//   psk:  DIR/keys.psk, lines "username:hexkey" (psktool's format); clients use `username`
//         (QEMU's default "qemu").
// and the STARTTLS upgrade of a plain socket with node:tls (proto.md "TLS support": the ACK goes
// out in clear, then both sides start TLS on the same stream).

import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import {
  EnvironmentError,
  InvalidArgumentError,
  strerror,
  systemErrorCode,
} from '../core/index.js';
import type { ServerTls } from './handshake.js';

export type TlsEndpoint = 'server' | 'client';

export type TlsCreds =
  | {
      kind: 'x509';
      endpoint: TlsEndpoint;
      dir: string;
      verifyPeer: boolean;
      ca: Buffer;
      crl: Buffer | undefined;
      cert: Buffer | undefined;
      key: Buffer | undefined;
    }
  | {
      kind: 'psk';
      endpoint: TlsEndpoint;
      dir: string;
      /** username -> key bytes */
      keys: Map<string, Buffer>;
      /** Client identity. */
      username: string;
    };

export interface X509CredsOptions {
  dir: string;
  endpoint: TlsEndpoint;
  /** Server: require and check a client certificate. Client: check the server's. @default true */
  verifyPeer?: boolean;
}

export interface PskCredsOptions {
  /** Directory holding keys.psk (QEMU's layout). */
  dir: string;
  /** The keys file itself, when it is not DIR/keys.psk (libnbd's tls-psk-file). */
  file?: string;
  endpoint: TlsEndpoint;
  /** Client identity looked up in keys.psk. @default 'qemu' (as QEMU) */
  username?: string;
}

async function credFile(dir: string, name: string, required: boolean): Promise<Buffer | undefined> {
  const path = join(dir, name);
  try {
    await stat(path);
    return await readFile(path);
  } catch (err) {
    const code = systemErrorCode(err);
    if (code === 'ENOENT' && !required) return undefined;
    throw new EnvironmentError(`Unable to access credentials ${path}: ${strerror(code)}`, {
      cause: err,
    });
  }
}

export async function loadX509Creds(options: X509CredsOptions): Promise<TlsCreds> {
  const { dir, endpoint } = options;
  const server = endpoint === 'server';
  const ca = (await credFile(dir, 'ca-cert.pem', true))!;
  const crl = server ? await credFile(dir, 'ca-crl.pem', false) : undefined;
  const cert = await credFile(dir, server ? 'server-cert.pem' : 'client-cert.pem', server);
  const key = await credFile(dir, server ? 'server-key.pem' : 'client-key.pem', server);
  const creds: TlsCreds = {
    kind: 'x509',
    endpoint,
    dir,
    verifyPeer: options.verifyPeer ?? true,
    ca,
    crl,
    cert,
    key,
  };
  // Fail at startup, not at the first client, when the files do not form valid credentials.
  try {
    tls.createSecureContext(secureContextOptions(creds));
  } catch (err) {
    throw new InvalidArgumentError(
      `Cannot load certificate '${join(dir, server ? 'server-cert.pem' : 'client-cert.pem')}' & key: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return creds;
}

/** Parse a psktool keys file: "username:hexkey" per line. */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      throw new InvalidArgumentError(`${path}:${i + 1}: expected 'username:hexkey'`);
    }
    keys.set(line.slice(0, colon), Buffer.from(hex, 'hex'));
  }
  return keys;
}

export async function loadPskCreds(options: PskCredsOptions): Promise<TlsCreds> {
  const { dir, endpoint } = options;
  if (endpoint === 'server' && options.username !== undefined) {
    throw new InvalidArgumentError('username should not be set when endpoint=server');
  }
  const path = options.file ?? join(dir, 'keys.psk');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new EnvironmentError(`Cannot read PSK file ${path}: ${strerror(systemErrorCode(err))}`, {
      cause: err,
    });
  }
  const keys = parsePskFile(text, path);
  const username = options.username ?? 'qemu';
  if (endpoint === 'client' && !keys.has(username)) {
    throw new InvalidArgumentError(`Username ${username} not found in PSK file ${path}`);
  }
  return { kind: 'psk', endpoint, dir, keys, username };
}

/** PSK cipher suites: TLS 1.3 suites plus the TLS 1.2 PSK ones GnuTLS offers (+ECDHE-PSK:+DHE-PSK:+PSK). */
const PSK_CIPHERS =
  'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:' +
  'ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:ECDHE-PSK-CHACHA20-POLY1305:' +
  'DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:DHE-PSK-CHACHA20-POLY1305:' +
  'PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305';

function secureContextOptions(creds: TlsCreds): tls.SecureContextOptions {
  if (creds.kind === 'psk') return { ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2' };
  const o: tls.SecureContextOptions = { ca: creds.ca, minVersion: 'TLSv1.2' };
  if (creds.crl) o.crl = creds.crl;
  if (creds.cert) o.cert = creds.cert;
  if (creds.key) o.key = creds.key;
  return o;
}

function awaitSecure(sock: tls.TLSSocket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      cleanup();
      reject(new EnvironmentError(`TLS handshake failed: ${err.message}`, { cause: err }));
    };
    const onClose = () => {
      cleanup();
      reject(new EnvironmentError('TLS handshake failed: connection closed'));
    };
    const onSecure = () => {
      cleanup();
      resolve(sock);
    };
    const cleanup = () => {
      sock.off('error', onError);
      sock.off('close', onClose);
      sock.off('secure', onSecure);
      sock.off('secureConnect', onSecure);
    };
    sock.once('error', onError);
    sock.once('close', onClose);
    sock.once('secure', onSecure);
    sock.once('secureConnect', onSecure);
  });
}

/** The server side of STARTTLS for these credentials. */
export function serverTls(creds: TlsCreds): ServerTls {
  if (creds.endpoint !== 'server') {
    throw new InvalidArgumentError('Expected TLS credentials for a server endpoint');
  }
  const secureContext = tls.createSecureContext(secureContextOptions(creds));
  return {
    upgrade: async (socket: Duplex) => {
      // pskCallback is honoured by TLSSocket as by tls.createServer (the typings only list it
      // for the latter).
      const options: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> = {
        isServer: true,
        secureContext,
      };
      if (creds.kind === 'x509') {
        options.requestCert = creds.verifyPeer;
        options.rejectUnauthorized = creds.verifyPeer;
      } else {
        options.pskCallback = (_sock, identity) => creds.keys.get(identity) ?? null;
      }
      const secure = new tls.TLSSocket(socket, options);
      return awaitSecure(secure);
    },
  };
}

export interface ClientTlsOptions {
  /** Name to check the server certificate against (x509). */
  hostname?: string | undefined;
  /** Check the server's certificate (x509). @default creds.verifyPeer */
  verifyPeer?: boolean | undefined;
}

/** The client side of STARTTLS. */
export async function clientTlsUpgrade(
  socket: Duplex,
  creds: TlsCreds,
  options: ClientTlsOptions = {},
): Promise<tls.TLSSocket> {
  if (creds.endpoint !== 'client') {
    throw new InvalidArgumentError('Expected TLS credentials for a client endpoint');
  }
  const o: tls.ConnectionOptions = {
    socket,
    secureContext: tls.createSecureContext(secureContextOptions(creds)),
  };
  if (creds.kind === 'x509') {
    const verify = options.verifyPeer ?? creds.verifyPeer;
    o.rejectUnauthorized = verify;
    if (options.hostname) o.servername = options.hostname;
    if (!verify || !options.hostname) o.checkServerIdentity = () => undefined;
  } else {
    const identity = creds.username;
    const psk = creds.keys.get(identity)!;
    o.pskCallback = () => ({ psk, identity });
    o.checkServerIdentity = () => undefined;
  }
  return awaitSecure(tls.connect(o));
}
