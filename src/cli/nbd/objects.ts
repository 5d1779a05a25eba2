// --object for the NBD tools: QEMU keyval syntax ("tls-creds-x509,id=tls0,dir=/pki,endpoint=server";
// ",," is a literal comma), for the two object types qemu-nbd uses for TLS. Messages match QEMU's
// (qom/object_interfaces.c, crypto/tlscreds*.c).

import { InvalidArgumentError } from '../../core/index.js';
import { loadPskCreds, loadX509Creds, type TlsCreds } from '../../nbd/tls.js';

/** Split QEMU keyval text into key/value pairs; the first bare word is `implied`'s value. */
export function parseKeyval(text: string, implied?: string): Map<string, string> {
  return new Map(parseKeyvalPairs(text, implied));
}

/** parseKeyval() keeping every pair in order, repeated keys included. */
export function parseKeyvalPairs(text: string, implied?: string): [string, string][] {
  const out: [string, string][] = [];
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  for (const [i, part] of parts.entries()) {
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (i === 0 && implied) {
        out.push([implied, part]);
        continue;
      }
      throw new InvalidArgumentError(`Expected '=' after parameter '${part}'`);
    }
    const key = part.slice(0, eq);
    if (!key) throw new InvalidArgumentError(`Invalid parameter '${part}'`);
    out.push([key, part.slice(eq + 1)]);
  }
  return out;
}

export function parseBool(name: string, value: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(value)) return true;
  if (['off', 'no', 'false', 'n'].includes(value)) return false;
  throw new InvalidArgumentError(`Parameter '${name}' expects 'on' or 'off'`);
}

export interface TlsObject {
  id: string;
  creds: TlsCreds;
}

const TLS_PROPS: Record<string, readonly string[]> = {
  'tls-creds-x509': ['qom-type', 'id', 'dir', 'endpoint', 'verify-peer', 'sanity-check'],
  'tls-creds-psk': ['qom-type', 'id', 'dir', 'endpoint', 'username'],
};

/** Create an object from an --object argument; only TLS credentials exist in vmforge-nbd. */
export async function createObject(text: string): Promise<TlsObject> {
  const kv = parseKeyval(text, 'qom-type');
  const type = kv.get('qom-type');
  if (type === undefined) throw new InvalidArgumentError("Parameter 'qom-type' is missing");
  const props = TLS_PROPS[type];
  if (!props)
    throw new InvalidArgumentError(`Parameter 'qom-type' does not accept value '${type}'`);
  const id = kv.get('id');
  if (id === undefined) throw new InvalidArgumentError("Parameter 'id' is missing");
  for (const key of kv.keys()) {
    if (!props.includes(key)) throw new InvalidArgumentError(`Property '${type}.${key}' not found`);
  }
  // QEMU's default endpoint is "client".
  const endpointText = kv.get('endpoint') ?? 'client';
  if (endpointText !== 'server' && endpointText !== 'client') {
    throw new InvalidArgumentError(`Parameter 'endpoint' does not accept value '${endpointText}'`);
  }
  const endpoint: 'server' | 'client' = endpointText;
  const dir = kv.get('dir');
  if (dir === undefined) throw new InvalidArgumentError("Missing 'dir' property value");
  if (type === 'tls-creds-x509') {
    const verify = kv.get('verify-peer');
    const sanity = kv.get('sanity-check');
    // sanity-check=off only skips QEMU's extra certificate checks; node:tls still validates.
    if (sanity !== undefined) parseBool('sanity-check', sanity);
    const creds = await loadX509Creds({
      dir,
      endpoint,
      verifyPeer: verify === undefined ? true : parseBool('verify-peer', verify),
    });
    return { id, creds };
  }
  const username = kv.get('username');
  const creds = await loadPskCreds(
    username === undefined ? { dir, endpoint } : { dir, endpoint, username },
  );
  return { id, creds };
}

/** Resolve --tls-creds ID against the created objects (qemu-nbd nbd_get_tls_creds). */
export function findTlsCreds(
  objects: readonly TlsObject[],
  id: string,
  endpoint: 'server' | 'client',
): TlsCreds {
  const obj = objects.find((o) => o.id === id);
  if (!obj)
    throw new InvalidArgumentError(`Failed to get TLS creds: No TLS credentials with id '${id}'`);
  if (obj.creds.endpoint !== endpoint) {
    throw new InvalidArgumentError(
      `Failed to get TLS creds: Expected TLS credentials for a ${endpoint} endpoint`,
    );
  }
  return obj.creds;
}
