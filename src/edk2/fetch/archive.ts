// Taking firmware out of a download: the container is recognised by its magic bytes (never by
// the URL): tar, gzip (a .tar.gz, or a gzipped image), zip, or anything else as a raw image.
// Every entry name is checked before anything is extracted: an absolute path or a `..`
// component rejects the archive. Only the requested members are written, to paths vmforge
// chooses inside its staging directory, so an entry name can never place a file anywhere.

import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import StreamZip from 'node-stream-zip';
import { Parser, type ReadEntry } from 'tar';
import {
  CorruptImageError,
  EnvironmentError,
  InvalidArgumentError,
  NotSupportedError,
  fromSystemError,
} from '../../core/index.js';

export type ContainerKind = 'raw' | 'tar' | 'tar.gz' | 'gzip' | 'zip';

export interface ArchiveEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
}

const MAGIC = {
  gzip: [0x1f, 0x8b],
  zip: [0x50, 0x4b, 0x03, 0x04],
  zipEmpty: [0x50, 0x4b, 0x05, 0x06],
  bzip2: [0x42, 0x5a, 0x68],
  xz: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
  zstd: [0x28, 0xb5, 0x2f, 0xfd],
  ar: [0x21, 0x3c, 0x61, 0x72, 0x63, 0x68, 0x3e, 0x0a], // "!<arch>\n": .deb
} as const;

function has(buf: Uint8Array, magic: readonly number[], at = 0): boolean {
  return buf.length >= at + magic.length && magic.every((b, i) => buf[at + i] === b);
}

function isTarHeader(buf: Uint8Array): boolean {
  // POSIX ustar / GNU tar: "ustar" at offset 257 (tar.5).
  return buf.length >= 262 && Buffer.from(buf.subarray(257, 262)).toString('latin1') === 'ustar';
}

async function head(path: string, n: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

async function gunzipHead(path: string, n: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let len = 0;
  const gunzip = createGunzip();
  const src = createReadStream(path);
  try {
    for await (const c of src.pipe(gunzip)) {
      chunks.push(c as Buffer);
      len += (c as Buffer).length;
      if (len >= n) break;
    }
  } catch (err) {
    throw new CorruptImageError(`'${path}' is not valid gzip data: ${(err as Error).message}`);
  } finally {
    src.destroy();
    gunzip.destroy();
  }
  return Buffer.concat(chunks).subarray(0, n);
}

export async function detectContainer(path: string): Promise<ContainerKind> {
  const buf = await head(path, 512);
  if (has(buf, MAGIC.gzip)) return isTarHeader(await gunzipHead(path, 512)) ? 'tar.gz' : 'gzip';
  if (has(buf, MAGIC.zip) || has(buf, MAGIC.zipEmpty)) return 'zip';
  if (isTarHeader(buf)) return 'tar';
  const unsupported: [readonly number[], string][] = [
    [MAGIC.bzip2, 'bzip2'],
    [MAGIC.xz, 'xz'],
    [MAGIC.zstd, 'zstd'],
    [MAGIC.ar, 'ar (.deb)'],
  ];
  for (const [m, name] of unsupported)
    if (has(buf, m))
      throw new NotSupportedError(
        `'${path}' is ${name} data; fetch understands raw images, .tar, .tar.gz, .gz and .zip`,
      );
  return 'raw';
}

/** Reject names that would leave the extraction directory or are absolute (incl. Windows forms). */
export function checkEntryName(name: string): void {
  const n = name.replace(/\\/g, '/');
  if (n.startsWith('/') || /^[A-Za-z]:/.test(n) || n.includes('\0'))
    throw new CorruptImageError(
      `Archive entry '${name}' has an absolute path; refusing the archive`,
      {
        code: 'VMF_FW_UNSAFE_ARCHIVE',
      },
    );
  if (n.split('/').includes('..'))
    throw new CorruptImageError(
      `Archive entry '${name}' escapes the archive ('..'); refusing the archive`,
      {
        code: 'VMF_FW_UNSAFE_ARCHIVE',
      },
    );
}

/** "./a/b.fd" and "a/b.fd" name the same member. */
export function normalizeMember(name: string): string {
  return name
    .replace(/\\/g, '/')
    .replace(/^(\.\/)+/, '')
    .replace(/\/+/g, '/');
}

function tarType(e: ReadEntry): ArchiveEntry['type'] {
  if (e.type === 'File' || e.type === 'OldFile' || e.type === 'ContiguousFile') return 'file';
  if (e.type === 'Directory') return 'directory';
  if (e.type === 'SymbolicLink' || e.type === 'Link') return 'symlink';
  return 'other';
}

/**
 * Walk a tar(.gz): check every name, list entries, and write the members in `want`
 * (normalized name → output path). Fails on the first unsafe name, before writing the rest.
 */
async function walkTar(
  path: string,
  want: Map<string, string>,
  maxBytes: number,
): Promise<ArchiveEntry[]> {
  const entries: ArchiveEntry[] = [];
  const writes: Promise<void>[] = [];
  let failure: unknown;
  const parser = new Parser({
    strict: true,
    onReadEntry: (e: ReadEntry) => {
      try {
        if (failure) throw failure;
        checkEntryName(e.path);
        const entry: ArchiveEntry = {
          name: normalizeMember(e.path),
          type: tarType(e),
          size: e.size,
        };
        entries.push(entry);
        const out = want.get(entry.name);
        if (out !== undefined && entry.type === 'file') {
          if (entry.size > maxBytes)
            throw new CorruptImageError(
              `Archive member '${e.path}' is ${e.size} bytes, over the ${maxBytes}-byte limit`,
            );
          writes.push(pipeline(e, createWriteStream(out)));
          return;
        }
      } catch (err) {
        failure ??= err;
      }
      e.resume();
    },
  });
  try {
    await pipeline(createReadStream(path), parser);
    await Promise.all(writes);
  } catch (err) {
    if (failure) throw failure;
    throw new CorruptImageError(`'${path}' is not a valid tar archive: ${(err as Error).message}`);
  }
  if (failure) throw failure;
  return entries;
}

async function walkZip(
  path: string,
  want: Map<string, string>,
  maxBytes: number,
): Promise<ArchiveEntry[]> {
  let zip: InstanceType<typeof StreamZip.async> | undefined;
  try {
    zip = new StreamZip.async({ file: path, storeEntries: true });
    const raw = await zip.entries();
    const entries: ArchiveEntry[] = [];
    for (const e of Object.values(raw)) {
      checkEntryName(e.name);
      // Unix mode in the high 16 bits of the external attributes: 0o120000 is a symlink.
      const unixMode = (e.attr >>> 16) & 0o170000;
      const type = e.isDirectory ? 'directory' : unixMode === 0o120000 ? 'symlink' : 'file';
      entries.push({ name: normalizeMember(e.name), type, size: e.size });
    }
    for (const e of Object.values(raw)) {
      const name = normalizeMember(e.name);
      const out = want.get(name);
      const info = entries.find((x) => x.name === name);
      if (out === undefined || info?.type !== 'file') continue;
      if (e.encrypted) throw new NotSupportedError(`Archive member '${e.name}' is encrypted`);
      if (e.size > maxBytes)
        throw new CorruptImageError(
          `Archive member '${e.name}' is ${e.size} bytes, over the ${maxBytes}-byte limit`,
        );
      await pipeline(await zip.stream(e), createWriteStream(out));
    }
    return entries;
  } catch (err) {
    if (err instanceof Error && 'kind' in err) throw err;
    // node-stream-zip vets names too ("Malicious entry: ../x"); report it in our words.
    const bad = /^Malicious entry: (.*)$/.exec((err as Error).message);
    if (bad) {
      checkEntryName(bad[1]!);
      throw new CorruptImageError(`Archive entry '${bad[1]}' is unsafe; refusing the archive`, {
        code: 'VMF_FW_UNSAFE_ARCHIVE',
      });
    }
    throw new CorruptImageError(`'${path}' is not a valid zip archive: ${(err as Error).message}`);
  } finally {
    await zip?.close().catch(() => undefined);
  }
}

export interface ExtractRequest {
  /** Member name inside the archive (ignored for raw/gzip). */
  member?: string;
  out: string;
}

export interface ExtractResult {
  kind: ContainerKind;
  /** The member actually taken for each request (after defaulting). */
  members: (string | undefined)[];
  entries: ArchiveEntry[];
}

/**
 * Extract `requests` from the download at `path`. Without a member name, an archive with exactly
 * one `*.fd` file yields that file; anything else is an error listing the candidates.
 */
export async function extractMembers(
  path: string,
  requests: ExtractRequest[],
  options: { maxBytes?: number; signal?: AbortSignal } = {},
): Promise<ExtractResult> {
  const maxBytes = options.maxBytes ?? 256 * 1024 * 1024;
  const kind = await detectContainer(path);
  if (kind === 'raw' || kind === 'gzip') {
    const named = requests.filter((r) => r.member !== undefined);
    if (named.length)
      throw new InvalidArgumentError(
        `'${named[0]!.member}' was asked for, but the download is a single ${kind === 'gzip' ? 'gzip-compressed ' : ''}image, not an archive`,
      );
    if (requests.length !== 1)
      throw new InvalidArgumentError('A raw download holds one image only');
    try {
      if (kind === 'gzip')
        await pipeline(createReadStream(path), createGunzip(), createWriteStream(requests[0]!.out));
      else await pipeline(createReadStream(path), createWriteStream(requests[0]!.out));
    } catch (err) {
      throw kind === 'gzip'
        ? new CorruptImageError(`'${path}' is not valid gzip data: ${(err as Error).message}`)
        : fromSystemError(err, `Could not copy '${path}'`);
    }
    return { kind, members: [undefined], entries: [] };
  }
  const walk = kind === 'zip' ? walkZip : walkTar;
  // First pass: list and vet every name, and resolve default members.
  const entries = await walk(path, new Map(), maxBytes);
  const files = entries.filter((e) => e.type === 'file');
  const members = requests.map((r) => {
    if (r.member !== undefined) {
      const name = normalizeMember(r.member);
      const hit = entries.find((e) => e.name === name);
      if (!hit)
        throw new EnvironmentError(
          `The archive has no member '${r.member}'; its files are: ${files.map((f) => f.name).join(', ') || '(none)'}`,
          { code: 'VMF_FW_NO_MEMBER' },
        );
      if (hit.type !== 'file')
        throw new CorruptImageError(
          `Archive member '${r.member}' is a ${hit.type}, not a regular file`,
        );
      return name;
    }
    const fds = files.filter((f) => f.name.toLowerCase().endsWith('.fd'));
    if (fds.length === 1) return fds[0]!.name;
    throw new InvalidArgumentError(
      `Name the firmware inside the archive with --member; candidates: ${(fds.length ? fds : files).map((f) => f.name).join(', ') || '(no files)'}`,
    );
  });
  options.signal?.throwIfAborted();
  await walk(path, new Map(members.map((m, i) => [m, requests[i]!.out])), maxBytes);
  return { kind, members, entries };
}
