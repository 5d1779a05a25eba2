// A disk holding a FAT file system whose startup.nsh the UEFI shell runs at boot (made with
// Debian's mtools/dosfstools until vmforge can build the image itself).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { run } from '../support/run.js';

/** The marker as printed, and the startup.nsh line that prints it without echoing it whole. */
export const MARKER = 'vmforge boot marker';
export const MARKER_RE = 'vmforge boot marker';

/** Build `name`.raw with startup.nsh = `lines`, and convert it to `name`.qcow2; returns paths. */
export async function makeUefiDisk(
  dir: string,
  name: string,
  lines: string[],
): Promise<{ raw: string; qcow2: string }> {
  const raw = join(dir, `${name}.raw`);
  const qcow2 = join(dir, `${name}.qcow2`);
  const nsh = join(dir, `${name}.nsh`);
  await writeFile(nsh, lines.map((l) => `${l}\r\n`).join(''));
  for (const [cmd, args] of [
    ['mkfs.fat', ['-C', '-n', 'VMFORGE', raw, '16384']],
    ['mcopy', ['-i', raw, nsh, '::/startup.nsh']],
    ['qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]],
  ] as const) {
    const r = await run(cmd, [...args]);
    expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
  }
  return { raw, qcow2 };
}

/** startup.nsh: print the marker (split in two words so the echoed command line differs), power off. */
export const MARKER_SCRIPT = ['echo "vmforge boot" "marker"', 'reset -s'];
