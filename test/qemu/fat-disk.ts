// A disk holding a FAT file system whose startup.nsh the UEFI shell runs at boot. The file
// system is made with Debian's mtools/dosfstools; the qcow2 image holding it is made and
// written by the vmforge image engine (createImage + openImage), not by qemu-img.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { createImage, openImage } from '../../src/image/index.js';
import { run } from '../support/run.js';

/** The marker as printed, and the startup.nsh line that prints it without echoing it whole. */
export const MARKER = 'vmforge boot marker';
export const MARKER_RE = 'vmforge boot marker';

/** Build `name`.raw with startup.nsh = `lines`, and copy it into a vmforge-made `name`.qcow2. */
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
  ] as const) {
    const r = await run(cmd, [...args]);
    expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
  }
  const bytes = await readFile(raw);
  await createImage(qcow2, { format: 'qcow2', size: bytes.length });
  const dev = await openImage(qcow2, { format: 'qcow2', readOnly: false });
  try {
    await dev.write(bytes, 0);
    await dev.flush();
  } finally {
    await dev.close();
  }
  const check = await run('qemu-img', ['check', '-q', qcow2]);
  expect(check.code, check.stdout + check.stderr).toBe(0);
  return { raw, qcow2 };
}

/** startup.nsh: print the marker (split in two words so the echoed command line differs), power off. */
export const MARKER_SCRIPT = ['echo "vmforge boot" "marker"', 'reset -s'];
