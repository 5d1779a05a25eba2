// listFirmware: every descriptor in the search directories, with docs/interop/firmware.json's
// precedence rules: build one list from all directories, sort it by file name; a file in a more
// specific directory replaces a same-named one from a more general directory; a zero-length file
// (or a symlink to /dev/null) hides it. Only `*.json` files count (libvirt does the same).

import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fromSystemError, isVmforgeError, systemErrorCode } from '../core/index.js';
import { decodeDescriptor, type FirmwareDescriptor } from './descriptor.js';
import { defaultDescriptorDirs, type Env } from './paths.js';

export interface ListFirmwareOptions {
  /** Directories, general to specific. Default: defaultDescriptorDirs(). */
  dirs?: readonly string[];
  /** Environment for XDG_CONFIG_HOME/XDG_CACHE_HOME/HOME. @default process.env */
  env?: Env;
  /** vmforge's cache (its descriptors/ is searched last); false leaves it out. */
  cacheDir?: string | false;
  signal?: AbortSignal;
}

export interface FirmwareEntry {
  /** File name, the sort key. */
  name: string;
  path: string;
  /** Less specific files of the same name that this one replaces. */
  overrides: string[];
  /** Set when the file parsed and validated. */
  descriptor?: FirmwareDescriptor;
  /** Why the file is unusable (bad JSON, schema violation, unreadable). */
  error?: string;
}

export interface MaskedEntry {
  name: string;
  /** The empty file doing the masking. */
  path: string;
  /** What it hides. */
  hides: string[];
}

export interface FirmwareList {
  dirs: string[];
  /** In precedence order (sorted by file name), valid and invalid alike. */
  entries: FirmwareEntry[];
  masked: MaskedEntry[];
}

interface Candidate {
  name: string;
  path: string;
  size: number;
}

async function scanDir(dir: string): Promise<Candidate[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = systemErrorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw fromSystemError(err, `Could not read firmware descriptor directory '${dir}'`);
  }
  const out: Candidate[] = [];
  for (const name of names) {
    if (!name.endsWith('.json')) continue;
    const path = join(dir, name);
    try {
      const st = await stat(path); // follows symlinks: a link to /dev/null masks
      if (st.isDirectory()) continue;
      out.push({ name, path, size: st.isFile() ? st.size : 0 });
    } catch {
      // A dangling symlink is not a descriptor; nothing to mask either.
    }
  }
  return out;
}

const byName = (a: { name: string }, b: { name: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

export async function listFirmware(options: ListFirmwareOptions = {}): Promise<FirmwareList> {
  const dirs = [
    ...(options.dirs ??
      defaultDescriptorDirs({
        ...(options.env ? { env: options.env } : {}),
        ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
      })),
  ];
  // name → every file of that name, general to specific.
  const byFile = new Map<string, Candidate[]>();
  for (const dir of dirs) {
    options.signal?.throwIfAborted();
    for (const c of await scanDir(dir)) {
      const list = byFile.get(c.name) ?? [];
      list.push(c);
      byFile.set(c.name, list);
    }
  }
  const entries: FirmwareEntry[] = [];
  const masked: MaskedEntry[] = [];
  for (const [name, files] of byFile) {
    const winner = files[files.length - 1]!;
    const hidden = files.slice(0, -1).map((f) => f.path);
    if (winner.size === 0) {
      masked.push({ name, path: winner.path, hides: hidden });
      continue;
    }
    const entry: FirmwareEntry = { name, path: winner.path, overrides: hidden };
    try {
      entry.descriptor = decodeDescriptor(await readFile(winner.path, 'utf8'), winner.path);
    } catch (err) {
      entry.error = isVmforgeError(err)
        ? err.message
        : fromSystemError(err, `Could not read '${winner.path}'`).message;
    }
    entries.push(entry);
  }
  entries.sort(byName);
  masked.sort(byName);
  return { dirs, entries, masked };
}
