// Build fixture descriptor trees (three directories, general to specific) in a temp dir.
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FirmwareDescriptor } from '../../src/edk2/descriptor.js';

export function uefi(
  arch: string,
  machines: string[],
  features: string[],
  code = `/fw/${arch}-code.fd`,
  vars: string | null = `/fw/${arch}-vars.fd`,
  extra: Partial<FirmwareDescriptor> = {},
): FirmwareDescriptor {
  return {
    description: `${arch} ${features.join(',')}`,
    'interface-types': ['uefi'],
    mapping: vars
      ? {
          device: 'flash',
          mode: 'split',
          executable: { filename: code, format: 'raw' },
          'nvram-template': { filename: vars, format: 'raw' },
        }
      : { device: 'flash', mode: 'combined', executable: { filename: code, format: 'raw' } },
    targets: [{ architecture: arch, machines }],
    features,
    tags: [],
    ...extra,
  };
}

export async function tree(
  root: string,
  files: Record<string, Record<string, FirmwareDescriptor | string | { symlink: string }>>,
): Promise<string[]> {
  const dirs: string[] = [];
  for (const [dir, entries] of Object.entries(files)) {
    const d = join(root, dir);
    await mkdir(d, { recursive: true });
    dirs.push(d);
    for (const [name, content] of Object.entries(entries)) {
      if (typeof content === 'object' && 'symlink' in content)
        await symlink(content.symlink, join(d, name));
      else
        await writeFile(
          join(d, name),
          typeof content === 'string' ? content : JSON.stringify(content),
        );
    }
  }
  return dirs;
}

/** A machine lister standing in for `qemu-system-<arch> -machine help`. */
export const fakeLister = async (arch: string) =>
  arch === 'aarch64'
    ? [
        { name: 'virt', aliasOf: 'virt-7.2', isDefault: false },
        { name: 'virt-7.2', isDefault: false },
        { name: 'virt-2.12', isDefault: false },
      ]
    : arch === 'x86_64'
      ? [
          { name: 'pc', aliasOf: 'pc-i440fx-7.2', isDefault: false },
          { name: 'pc-i440fx-7.2', isDefault: true },
          { name: 'q35', aliasOf: 'pc-q35-7.2', isDefault: false },
          { name: 'pc-q35-7.2', isDefault: false },
          { name: 'pc-q35-2.6', isDefault: false },
        ]
      : undefined;
