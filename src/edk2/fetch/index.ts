// fetchFirmware: download (resumable, retried), verify the SHA-256 of the download before
// anything is kept, unpack the member(s), check they are UEFI firmware, store them in the cache
// with a manifest and a descriptor. A failure at any step leaves nothing in the store; only a
// partial download whose bytes may still be right is kept (downloads/<sha256>.part) so the next
// attempt resumes it.

import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { CorruptImageError, InvalidArgumentError, fromSystemError } from '../../core/index.js';
import { registerFirmware, sha256File, type CacheManifest } from '../cache.js';
import { hostQemuArch, PFLASH_SIZE } from '../constants.js';
import type { FlashMode } from '../descriptor.js';
import { defaultCacheDir, type Env } from '../paths.js';
import { extractMembers, type ContainerKind } from './archive.js';
import { CATALOGUE, type CatalogueEntry } from './catalogue.js';
import { download, removePart, type DownloadOptions } from './download.js';
import { checkFirmwareFile } from './verify.js';

export interface FetchProgress {
  phase: 'download' | 'verify' | 'extract' | 'store';
  received?: number;
  total?: number;
  attempt?: number;
  message?: string;
}

export interface FetchFirmwareOptions extends Omit<DownloadOptions, 'onProgress' | 'env'> {
  /** A URL (http/https) or a catalogue name (see CATALOGUE). */
  source: string;
  /** Expected SHA-256 of the downloaded file (hex). Required for URLs. */
  sha256?: string;
  /** Path of the code image inside an archive. */
  member?: string;
  /** Path of the vars template inside the same archive. */
  varsMember?: string;
  /** QEMU target the firmware is for. @default the catalogue's, else the host's */
  arch?: string;
  /** Flash mode for the descriptor. @default split with a vars template (a blank one on ARM), else combined */
  mode?: FlashMode;
  /** Descriptor features (firmware.json FirmwareFeature). */
  features?: readonly string[];
  /** Descriptor machine globs. @default virt-* on ARM, pc-q35-* and pc-i440fx-* on x86 */
  machines?: readonly string[];
  /** @default $XDG_CACHE_HOME/vmforge/firmware */
  cacheDir?: string;
  env?: Env;
  onProgress?: (p: FetchProgress) => void;
}

export interface FetchedFirmware {
  /** The stored code image. */
  path: string;
  vars?: string;
  /** SHA-256 of the download (what was verified). */
  sha256: string;
  /** Size of the stored code image. */
  size: number;
  source: string;
  member?: string;
  container: ContainerKind;
  descriptor: string;
  manifest: CacheManifest;
  attempts: number;
  resumedAt: number[];
}

function defaultMachines(arch: string): string[] {
  if (arch === 'x86_64' || arch === 'i386') return ['pc-q35-*', 'pc-i440fx-*'];
  return ['virt-*'];
}

function resolveSource(o: FetchFirmwareOptions): {
  url: string;
  sha256: string;
  entry?: CatalogueEntry;
} {
  if (/^https?:\/\//i.test(o.source)) {
    if (!o.sha256)
      throw new InvalidArgumentError(
        `--sha256 is required for '${o.source}' (the download is verified before it is kept)`,
      );
    return { url: o.source, sha256: o.sha256 };
  }
  const entry = CATALOGUE.find((e) => e.name === o.source);
  if (!entry)
    throw new InvalidArgumentError(
      `'${o.source}' is neither an http(s) URL nor a known firmware name (known: ${CATALOGUE.map((e) => e.name).join(', ')})`,
    );
  return { url: entry.url, sha256: o.sha256 ?? entry.sha256, entry };
}

export async function fetchFirmware(options: FetchFirmwareOptions): Promise<FetchedFirmware> {
  const { url, sha256: expectedRaw, entry } = resolveSource(options);
  const expected = expectedRaw.toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(expected))
    throw new InvalidArgumentError(`Invalid SHA-256 '${expectedRaw}': expected 64 hex digits`);
  const env = options.env ?? process.env;
  const arch = options.arch ?? entry?.arch ?? hostQemuArch();
  const member = options.member ?? entry?.member;
  const varsMember = options.varsMember ?? entry?.varsMember;
  const cacheDir = options.cacheDir ?? defaultCacheDir(env);
  const progress = options.onProgress ?? (() => undefined);
  const downloads = join(cacheDir, 'downloads');
  try {
    await mkdir(downloads, { recursive: true });
  } catch (err) {
    throw fromSystemError(err, `Could not create the firmware cache in '${cacheDir}'`);
  }
  // Keyed by the expected digest: a later run with the same pin resumes the same bytes.
  const part = join(downloads, `${expected}.part`);
  const { timeoutMs, retries, retryDelayMs, maxBytes, dispatcher, signal } = options;
  const dl = await download(url, part, {
    env,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(retries !== undefined ? { retries } : {}),
    ...(retryDelayMs !== undefined ? { retryDelayMs } : {}),
    ...(maxBytes !== undefined ? { maxBytes } : {}),
    ...(dispatcher ? { dispatcher } : {}),
    ...(signal ? { signal } : {}),
    onProgress: (p) => progress({ phase: 'download', ...p }),
  });

  progress({ phase: 'verify', message: 'checking SHA-256' });
  const actual = await sha256File(part, signal);
  if (actual !== expected) {
    await removePart(part);
    throw new CorruptImageError(
      `SHA-256 mismatch for '${url}': expected ${expected}, got ${actual}; nothing was stored`,
      { code: 'VMF_FW_DIGEST_MISMATCH', details: { expected, actual } },
    );
  }

  const staging = join(downloads, `.extract-${randomBytes(6).toString('hex')}`);
  await mkdir(staging);
  try {
    progress({ phase: 'extract', message: 'unpacking' });
    const codeOut = join(staging, 'code');
    const varsOut = join(staging, 'vars');
    const requests = [{ out: codeOut, ...(member !== undefined ? { member } : {}) }];
    if (varsMember !== undefined) requests.push({ out: varsOut, member: varsMember });
    const ex = await extractMembers(part, requests, {
      ...(signal ? { signal } : {}),
      ...(maxBytes !== undefined ? { maxBytes } : {}),
    });
    const codeMember = ex.members[0];
    await checkFirmwareFile(codeOut, 'code', codeMember ?? basename(new URL(url).pathname), signal);
    if (varsMember !== undefined) await checkFirmwareFile(varsOut, 'vars', varsMember, signal);

    progress({ phase: 'store', message: `storing in ${cacheDir}` });
    const name = entry?.name ?? basename(codeMember ?? new URL(url).pathname);
    const pflash = PFLASH_SIZE[arch];
    const manifest = await registerFirmware({
      cacheDir,
      name,
      arch,
      code: {
        from: codeOut,
        name: basename(codeMember ?? new URL(url).pathname) || 'code.fd',
        move: true,
      },
      ...(varsMember !== undefined
        ? { vars: { from: varsOut, name: basename(varsMember), move: true } }
        : options.mode !== 'combined' && options.mode !== 'stateless' && pflash !== undefined
          ? { blankVarsSize: pflash }
          : {}),
      ...(options.mode ? { mode: options.mode } : {}),
      description: entry?.description ?? `UEFI firmware for ${arch} fetched by vmforge from ${url}`,
      machines: [...(options.machines ?? entry?.machines ?? defaultMachines(arch))],
      features: [...(options.features ?? entry?.features ?? [])],
      tags: [
        `source=${url}`,
        `sha256=${expected}`,
        ...(codeMember ? [`member=${codeMember}`] : []),
      ],
      source: {
        kind: 'fetch',
        url,
        sha256: expected,
        ...(codeMember ? { member: codeMember } : {}),
        ...(varsMember ? { varsMember } : {}),
      },
      ...(signal ? { signal } : {}),
    });
    return {
      path: manifest.code.path,
      ...(manifest.vars ? { vars: manifest.vars.path } : {}),
      sha256: expected,
      size: manifest.code.size,
      source: url,
      ...(codeMember ? { member: codeMember } : {}),
      container: ex.kind,
      descriptor: manifest.descriptor,
      manifest,
      attempts: dl.attempts,
      resumedAt: dl.resumedAt,
    };
  } finally {
    // The download was complete and verified: whatever happened next, it is not needed again.
    await removePart(part);
    await rm(staging, { recursive: true, force: true });
  }
}

export { CATALOGUE, type CatalogueEntry } from './catalogue.js';
export { detectContainer, checkEntryName, extractMembers } from './archive.js';
export { download, defaultDispatcher } from './download.js';
