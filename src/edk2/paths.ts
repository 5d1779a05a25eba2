// Where descriptors are searched and where vmforge keeps fetched and built firmware.

import { homedir } from 'node:os';
import { join } from 'node:path';
import { SYSTEM_DESCRIPTOR_DIRS } from './constants.js';

export type Env = Readonly<Record<string, string | undefined>>;

function home(env: Env): string {
  return env['HOME'] || homedir();
}

/** $XDG_CONFIG_HOME/qemu/firmware (XDG_CONFIG_HOME defaults to $HOME/.config). */
export function userDescriptorDir(env: Env = process.env): string {
  return join(env['XDG_CONFIG_HOME'] || join(home(env), '.config'), 'qemu', 'firmware');
}

/** $XDG_CACHE_HOME/vmforge/firmware, default ~/.cache/vmforge/firmware. */
export function defaultCacheDir(env: Env = process.env): string {
  return join(env['XDG_CACHE_HOME'] || join(home(env), '.cache'), 'vmforge', 'firmware');
}

/** Descriptors vmforge writes for what it fetched or built. */
export function cacheDescriptorDir(cacheDir: string): string {
  return join(cacheDir, 'descriptors');
}

/**
 * The search list, general to specific: the three firmware.json directories, then vmforge's
 * cache (most specific, so a same-named file there overrides; its files are named
 * `NN-vmforge-*.json` and so do not collide with distro names unless the user wants them to).
 */
export function defaultDescriptorDirs(
  options: { env?: Env; cacheDir?: string | false } = {},
): string[] {
  const env = options.env ?? process.env;
  const dirs: string[] = [...SYSTEM_DESCRIPTOR_DIRS, userDescriptorDir(env)];
  if (options.cacheDir !== false)
    dirs.push(cacheDescriptorDir(options.cacheDir ?? defaultCacheDir(env)));
  return dirs;
}
