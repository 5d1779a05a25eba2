// Reading a spec: YAML or JSON text → plain object, `--set path=value` overrides, and relative
// paths resolved against the spec file's directory (as lima and compose files do).

import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { InvalidArgumentError, fromSystemError } from '../../core/index.js';
import type { VmModel } from '../model.js';
import { normalizeSpec } from './normalize.js';

/** Specs are small; anything bigger is a mistake (or hostile). */
const MAX_SPEC_BYTES = 1024 * 1024;

/** Parse spec text. JSON when `format` says so or the text starts with `{`, YAML otherwise. */
export function parseSpecText(text: string, source = 'spec', format?: 'json' | 'yaml'): unknown {
  const json = format ? format === 'json' : /^\s*\{/.test(text);
  if (json) {
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new InvalidArgumentError(`${source}: invalid JSON: ${(err as Error).message}`, {
        code: 'VMF_INVALID_SPEC',
        cause: err,
      });
    }
  }
  try {
    // uniqueKeys: a repeated key is a mistake, not an override; maxAliasCount bounds the
    // "billion laughs" expansion of hostile YAML.
    return parseYaml(text, { uniqueKeys: true, maxAliasCount: 100, prettyErrors: true }) as unknown;
  } catch (err) {
    const msg =
      err instanceof YAMLParseError
        ? err.message.split('\n')[0]!
        : err instanceof Error
          ? err.message
          : String(err);
    throw new InvalidArgumentError(`${source}: invalid YAML: ${msg}`, {
      code: 'VMF_INVALID_SPEC',
      cause: err,
    });
  }
}

export async function readSpecFile(path: string): Promise<unknown> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw fromSystemError(err, `Could not read spec '${path}'`);
  }
  if (buf.length > MAX_SPEC_BYTES) {
    throw new InvalidArgumentError(`${path}: a spec larger than 1 MiB is not accepted`, {
      code: 'VMF_INVALID_SPEC',
    });
  }
  const format = /\.json$/i.test(path) ? 'json' : /\.ya?ml$/i.test(path) ? 'yaml' : undefined;
  return parseSpecText(buf.toString('utf8'), path, format);
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Apply `path=value` overrides in place: `memory.size=2G`, `disks[0].snapshot=true`,
 * `smp.cpus=4`. The value is read as a YAML scalar or flow collection (`true`, `4`, `[0, 1]`);
 * an empty value removes the field.
 */
export function applySetOverrides(spec: unknown, sets: string[]): Record<string, unknown> {
  const root: Record<string, unknown> =
    typeof spec === 'object' && spec !== null && !Array.isArray(spec)
      ? (spec as Record<string, unknown>)
      : {};
  for (const assignment of sets) {
    const eq = assignment.indexOf('=');
    if (eq <= 0) {
      throw new InvalidArgumentError(
        `--set ${assignment}: expected path=value (e.g. memory.size=2G)`,
      );
    }
    const path = assignment.slice(0, eq);
    const raw = assignment.slice(eq + 1);
    const keys = splitPath(path, assignment);
    const value = raw === '' ? undefined : parseSpecText(raw, `--set ${path}`, 'yaml');
    setAt(root, keys, value, assignment);
  }
  return root;
}

function splitPath(path: string, assignment: string): (string | number)[] {
  const keys: (string | number)[] = [];
  for (const part of path.split('.')) {
    const m = /^([A-Za-z_][A-Za-z0-9_-]*)?((?:\[\d+\])*)$/.exec(part);
    if (!m || (!m[1] && !m[2])) {
      throw new InvalidArgumentError(
        `--set ${assignment}: bad path '${path}' (e.g. disks[0].path)`,
      );
    }
    if (m[1]) keys.push(/^\d+$/.test(m[1]) ? Number(m[1]) : m[1]);
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) keys.push(Number(idx[1]));
  }
  for (const k of keys) {
    if (typeof k === 'string' && FORBIDDEN_KEYS.has(k)) {
      throw new InvalidArgumentError(`--set ${assignment}: '${k}' is not a spec field`);
    }
  }
  return keys;
}

function setAt(
  root: Record<string, unknown>,
  keys: (string | number)[],
  value: unknown,
  assignment: string,
): void {
  let node: unknown = root;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const last = i === keys.length - 1;
    const container = node as Record<string | number, unknown>;
    if (typeof key === 'number') {
      if (!Array.isArray(node)) {
        throw new InvalidArgumentError(
          `--set ${assignment}: ${keys.slice(0, i).join('.')} is not a list`,
        );
      }
      if (key > node.length) {
        throw new InvalidArgumentError(
          `--set ${assignment}: index ${key} is past the end of a list of ${node.length}`,
        );
      }
    } else if (typeof node !== 'object' || node === null || Array.isArray(node)) {
      throw new InvalidArgumentError(
        `--set ${assignment}: ${keys.slice(0, i).join('.')} is not a mapping (it is ${JSON.stringify(node)})`,
      );
    }
    if (last) {
      if (value === undefined && !Array.isArray(node)) Reflect.deleteProperty(container, key);
      else container[key] = value;
      return;
    }
    let next = Object.hasOwn(container, key) ? container[key] : undefined;
    if (next === undefined || next === null) {
      next = typeof keys[i + 1] === 'number' ? [] : {};
      container[key] = next;
    }
    node = next;
  }
}

export interface LoadSpecOptions {
  /** `path=value` overrides applied before validation. */
  set?: string[];
  /** Directory relative paths are resolved against (default: the spec file's directory). */
  baseDir?: string;
}

/** Read, override, validate and resolve a spec file into a VmModel. */
export async function loadSpec(path: string, options: LoadSpecOptions = {}): Promise<VmModel> {
  const raw = await readSpecFile(path);
  const spec = applySetOverrides(raw ?? {}, options.set ?? []);
  return resolveModelPaths(normalizeSpec(spec), options.baseDir ?? dirname(resolve(path)));
}

/** Make every host path in the model absolute, relative to `baseDir`. */
export function resolveModelPaths(m: VmModel, baseDir: string): VmModel {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  const opt = (p: string | undefined): string | undefined => (p === undefined ? p : abs(p));
  if (m.emulator?.includes('/')) m.emulator = abs(m.emulator);
  const fw = m.firmware;
  if (fw.type === 'uefi') {
    fw.code = opt(fw.code);
    fw.varsTemplate = opt(fw.varsTemplate);
    fw.vars = opt(fw.vars);
  } else if (fw.type === 'bios') fw.path = opt(fw.path);
  if (m.kernel) {
    m.kernel.path = abs(m.kernel.path);
    m.kernel.initrd = opt(m.kernel.initrd);
    m.kernel.dtb = opt(m.kernel.dtb);
  }
  for (const d of m.disks) {
    if (d.source.kind === 'file') d.source.path = abs(d.source.path);
    else if (d.source.server.type === 'unix') d.source.server.path = abs(d.source.server.path);
  }
  const b = m.memory.backend;
  if (b.kind === 'file') b.path = abs(b.path);
  if (b.kind === 'hugepages') b.mount = opt(b.mount);
  for (const d of m.memory.dimms) d.path = opt(d.path);
  for (const s of m.shares) {
    s.path = abs(s.path);
    if (s.kind === 'virtiofs' && s.virtiofsd?.includes('/')) s.virtiofsd = abs(s.virtiofsd);
  }
  for (const n of m.networks) {
    if (n.kind === 'tap') {
      if (n.script && n.script !== 'no') n.script = abs(n.script);
      if (n.downscript && n.downscript !== 'no') n.downscript = abs(n.downscript);
    }
  }
  m.serial.log = opt(m.serial.log);
  if (m.qmp.kind === 'unix') m.qmp.path = opt(m.qmp.path);
  return m;
}
