// vmforge's firmware cache: what `fetch` downloads and `build` produces is stored under
//   <cache>/store/<id>/{<code file>,<vars file>,manifest.json}
// and described by <cache>/descriptors/<NN>-vmforge-<id>.json, a firmware.json descriptor, so
// list/find (and anything that reads descriptors from that directory) see it. Entries are
// staged in a temporary directory and renamed into place: a failed fetch leaves nothing behind.

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, fromSystemError } from '../core/index.js';
import {
  encodeDescriptor,
  type FirmwareDescriptor,
  type FirmwareMapping,
  type FlashMode,
} from './descriptor.js';
import { sniffImage } from './image-format.js';
import { cacheDescriptorDir } from './paths.js';

export interface StoredFile {
  /** Absolute path inside the store. */
  path: string;
  sha256: string;
  size: number;
  format: 'raw' | 'qcow2';
}

export interface CacheManifest {
  id: string;
  name: string;
  arch: string;
  created: string;
  source: Record<string, unknown>;
  code: StoredFile;
  vars?: StoredFile;
  mode: FlashMode;
  descriptor: string;
}

export interface RegisterFileInput {
  /** File to take in. */
  from: string;
  /** Name inside the store entry. @default basename(from) */
  name?: string;
  /** Rename instead of copying (the caller's temporary file). */
  move?: boolean;
}

export interface RegisterInput {
  cacheDir: string;
  /** Short name: catalogue name, archive member or build platform. */
  name: string;
  arch: string;
  code: RegisterFileInput;
  vars?: RegisterFileInput;
  /** Create a blank (all-zero) vars template of this many bytes when `vars` is absent. */
  blankVarsSize?: number;
  /** @default split when there is a vars template, else combined */
  mode?: FlashMode;
  description: string;
  machines: string[];
  features: string[];
  tags: string[];
  source: Record<string, unknown>;
  /** Descriptor file-name prefix (sort order against distro files). @default 70 */
  priority?: number;
  signal?: AbortSignal;
}

export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  try {
    await pipeline(createReadStream(path), h, signal ? { signal } : {});
  } catch (err) {
    throw fromSystemError(err, `Could not read '${path}'`);
  }
  return h.digest('hex');
}

export function slug(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/\.(fd|bin|raw|qcow2)$/, '')
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '');
  return s.slice(0, 64) || 'firmware';
}

function safeFileName(name: string): string {
  const b = basename(name);
  if (b === '' || b === '.' || b === '..' || b === 'manifest.json')
    throw new InvalidArgumentError(`Unusable file name '${name}' for the firmware cache`);
  return b;
}

async function stageFile(input: RegisterFileInput, dir: string, signal?: AbortSignal) {
  const name = safeFileName(input.name ?? input.from);
  const path = join(dir, name);
  try {
    if (input.move) await rename(input.from, path);
    else await copyFile(input.from, path);
  } catch (err) {
    throw fromSystemError(err, `Could not store '${input.from}' in the firmware cache`);
  }
  const sniff = await sniffImage(path);
  return {
    name,
    path,
    sha256: await sha256File(path, signal),
    size: sniff.fileSize,
    format: sniff.format,
  };
}

/** Store firmware files and write their manifest and descriptor. Returns the manifest. */
export async function registerFirmware(input: RegisterInput): Promise<CacheManifest> {
  const storeRoot = join(input.cacheDir, 'store');
  const descDir = cacheDescriptorDir(input.cacheDir);
  try {
    await mkdir(storeRoot, { recursive: true });
    await mkdir(descDir, { recursive: true });
  } catch (err) {
    throw fromSystemError(err, `Could not create the firmware cache in '${input.cacheDir}'`);
  }
  const staging = join(storeRoot, `.staging-${randomBytes(6).toString('hex')}`);
  await mkdir(staging);
  try {
    const code = await stageFile(input.code, staging, input.signal);
    let vars: Awaited<ReturnType<typeof stageFile>> | undefined;
    if (input.vars) {
      vars = await stageFile(input.vars, staging, input.signal);
    } else if (input.blankVarsSize !== undefined) {
      const tmp = join(staging, '.blank');
      const fh = await open(tmp, 'w');
      await fh.truncate(input.blankVarsSize); // zeros: an empty varstore the firmware formats
      await fh.close();
      vars = await stageFile({ from: tmp, name: 'VARS.fd', move: true }, staging, input.signal);
    }
    const mode = input.mode ?? (vars ? 'split' : 'combined');
    if (mode === 'split' && !vars)
      throw new InvalidArgumentError('Flash mode split needs a vars template');
    const id = `${slug(input.name)}-${code.sha256.slice(0, 12)}`;
    const entry = join(storeRoot, id);
    const final = (f: { name: string; sha256: string; size: number; format: 'raw' | 'qcow2' }) => ({
      path: join(entry, f.name),
      sha256: f.sha256,
      size: f.size,
      format: f.format,
    });
    const codeFile = final(code);
    const varsFile = vars && mode === 'split' ? final(vars) : undefined;
    const priority = String(input.priority ?? 70).padStart(2, '0');
    const descriptorPath = join(descDir, `${priority}-vmforge-${id}.json`);
    const mapping: FirmwareMapping = {
      device: 'flash',
      mode,
      executable: { filename: codeFile.path, format: codeFile.format },
      ...(varsFile
        ? { 'nvram-template': { filename: varsFile.path, format: varsFile.format } }
        : {}),
    };
    const descriptor: FirmwareDescriptor = {
      description: input.description,
      'interface-types': ['uefi'],
      mapping,
      targets: [{ architecture: input.arch, machines: input.machines }],
      features: input.features,
      tags: input.tags,
    };
    const manifest: CacheManifest = {
      id,
      name: input.name,
      arch: input.arch,
      created: new Date().toISOString(),
      source: input.source,
      code: codeFile,
      ...(varsFile ? { vars: varsFile } : {}),
      mode,
      descriptor: descriptorPath,
    };
    await writeFile(join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    await rm(entry, { recursive: true, force: true });
    await rename(staging, entry);
    const tmpDesc = `${descriptorPath}.tmp-${randomBytes(4).toString('hex')}`;
    await writeFile(tmpDesc, encodeDescriptor(descriptor));
    await rename(tmpDesc, descriptorPath);
    return manifest;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

export async function readManifest(path: string): Promise<CacheManifest> {
  return JSON.parse(await readFile(path, 'utf8')) as CacheManifest;
}
