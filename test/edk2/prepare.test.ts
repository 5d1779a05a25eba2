import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareFirmware } from '../../src/edk2/prepare.js';
import { AARCH64_PFLASH_SIZE } from '../../src/edk2/constants.js';
import { createImage, openImage } from '../../src/image/index.js';
import { tempDir } from '../support/tmp.js';
import { armCode, ovmfCode, varsImage } from './fv-fixtures.js';
import { fakeLister, tree, uefi } from './descriptor-tree.js';

async function files(dir: string, content: Record<string, Uint8Array>) {
  for (const [n, c] of Object.entries(content)) await writeFile(join(dir, n), c);
}

describe('prepareFirmware', () => {
  it('aarch64: copies code and vars and pads both to exactly 64 MiB, leaving the templates alone', async () => {
    const d = await tempDir();
    const code = armCode();
    const vars = varsImage(0xc0000);
    await files(d, { 'QEMU_EFI.fd': code, 'QEMU_VARS.fd': vars });
    const r = await prepareFirmware({
      arch: 'aarch64',
      code: join(d, 'QEMU_EFI.fd'),
      varsTemplate: join(d, 'QEMU_VARS.fd'),
      outDir: join(d, 'vm'),
    });
    expect(r).toMatchObject({ arch: 'aarch64', mode: 'split', padded: true });
    for (const p of [r.code.path, r.vars!.path])
      expect((await stat(p)).size).toBe(AARCH64_PFLASH_SIZE);
    const out = await readFile(r.code.path);
    expect(Buffer.compare(out.subarray(0, code.length), code)).toBe(0);
    expect(out.subarray(code.length).every((b) => b === 0)).toBe(true);
    expect((await stat(join(d, 'QEMU_EFI.fd'))).size).toBe(code.length); // template untouched
    expect(r.code.volumes.map((v) => v.offset)).toEqual([0x1000]);
    expect(r.vars!.volumes.map((v) => v.kind)).toEqual(['nvram']);
    expect(r.qemuArgs).toEqual([
      '-drive',
      `if=pflash,unit=0,format=raw,readonly=on,file=${r.code.path}`,
      '-drive',
      `if=pflash,unit=1,format=raw,file=${r.vars!.path}`,
    ]);
  });

  it('x86_64: no padding; the vars copy is a separate file', async () => {
    const d = await tempDir();
    await files(d, { 'c.fd': ovmfCode(), 'v.fd': varsImage() });
    const r = await prepareFirmware({
      arch: 'x86_64',
      code: join(d, 'c.fd'),
      varsTemplate: join(d, 'v.fd'),
      outDir: join(d, 'vm'),
    });
    expect(r.padded).toBe(false);
    expect((await stat(r.code.path)).size).toBe(0x30000);
    expect((await stat(r.vars!.path)).size).toBe(0x20000);
  });

  it('aarch64 without a template creates a blank 64 MiB store', async () => {
    const d = await tempDir();
    await files(d, { 'QEMU_EFI.fd': armCode() });
    const r = await prepareFirmware({
      arch: 'aarch64',
      code: join(d, 'QEMU_EFI.fd'),
      outDir: d + '/vm',
    });
    expect(r.vars).toMatchObject({ blank: true, size: AARCH64_PFLASH_SIZE });
    expect((await stat(r.vars!.path)).size).toBe(AARCH64_PFLASH_SIZE);
  });

  it('refuses files that are not UEFI firmware, with the reason', async () => {
    const d = await tempDir();
    await files(d, {
      'kernel.bin': new Uint8Array(0x20000).fill(0x41),
      'vars.fd': varsImage(),
      'code.fd': armCode(),
      'disk.vmdk': Buffer.concat([Buffer.from('KDMV'), Buffer.alloc(508)]),
    });
    const run = (code: string, vars?: string) =>
      prepareFirmware({
        arch: 'aarch64',
        code: join(d, code),
        ...(vars ? { varsTemplate: join(d, vars) } : {}),
        outDir: join(d, 'vm'),
      });
    await expect(run('kernel.bin')).rejects.toThrow(
      /is not UEFI firmware: no valid firmware volume header .*'_FVH' at offset 40/,
    );
    await expect(run('vars.fd')).rejects.toThrow(
      /is not UEFI firmware code: it holds only nvram volumes/,
    );
    await expect(run('code.fd', 'code.fd')).rejects.toThrow(
      /is not a UEFI variable store: its volumes are ffs2/,
    );
    await expect(run('code.fd', 'kernel.bin')).rejects.toThrow(
      /not a UEFI variable store: no firmware volume header and not blank/,
    );
    await expect(run('disk.vmdk')).rejects.toThrow(
      /is a vmdk image; firmware must be a raw or qcow2 file/,
    );
    await expect(run('missing.fd')).rejects.toThrow(
      /Could not open .*missing.fd.*No such file or directory/,
    );
  });

  it('refuses aarch64 code larger than the pflash device', async () => {
    const d = await tempDir();
    const big = new Uint8Array(AARCH64_PFLASH_SIZE + 0x1000);
    big.set(armCode(), 0);
    await files(d, { 'big.fd': big });
    await expect(
      prepareFirmware({ arch: 'aarch64', code: join(d, 'big.fd'), outDir: join(d, 'vm') }),
    ).rejects.toThrow(/larger than the 67108864-byte pflash device/);
  });

  it('keeps an existing vars file (the VM’s variables) unless resetVars', async () => {
    const d = await tempDir();
    await files(d, { 'c.fd': ovmfCode(), 'v.fd': varsImage() });
    const o = {
      arch: 'x86_64',
      code: join(d, 'c.fd'),
      varsTemplate: join(d, 'v.fd'),
      outDir: join(d, 'vm'),
    };
    const first = await prepareFirmware(o);
    const mine = varsImage();
    mine[0x1000] = 0x42; // the guest wrote a variable
    await writeFile(first.vars!.path, mine);
    const again = await prepareFirmware(o);
    expect(again.vars!.reused).toBe(true);
    expect((await readFile(again.vars!.path))[0x1000]).toBe(0x42);
    const reset = await prepareFirmware({ ...o, resetVars: true });
    expect(reset.vars!.reused).toBe(false);
    expect((await readFile(reset.vars!.path))[0x1000]).toBe(0xff);
  });

  it('never overwrites its own source', async () => {
    const d = await tempDir();
    await files(d, { 'code.fd': ovmfCode(), 'v.fd': varsImage() });
    await expect(
      prepareFirmware({
        arch: 'x86_64',
        code: join(d, 'code.fd'),
        varsTemplate: join(d, 'v.fd'),
        outDir: d,
      }),
    ).rejects.toThrow(/Refusing to overwrite the source firmware/);
  });

  it('picks the firmware from descriptors and reports what QEMU needs for SMM', async () => {
    const d = await tempDir();
    await files(d, { 'sb.fd': ovmfCode(), 'v.fd': varsImage() });
    const dirs = await tree(d, {
      usr: {
        '50-sb.json': uefi(
          'x86_64',
          ['pc-q35-*'],
          ['requires-smm', 'secure-boot'],
          join(d, 'sb.fd'),
          join(d, 'v.fd'),
        ),
      },
    });
    const r = await prepareFirmware({
      dirs,
      machineLister: fakeLister,
      arch: 'x86_64',
      outDir: join(d, 'vm'),
    });
    expect(r.match?.name).toBe('50-sb.json');
    expect(r.machineProperties).toEqual(['smm=on']);
    expect(r.globals).toEqual(['driver=cfi.pflash01,property=secure,value=on']);
  });

  it('sniffs qcow2 by magic, whatever the file is called, and checks the volumes inside', async () => {
    const d = await tempDir();
    // A real qcow2 made by vmforge's own driver, holding an ArmVirtQemu-like image.
    const makeQcow2 = async (name: string, content: Uint8Array, size = AARCH64_PFLASH_SIZE) => {
      await createImage(join(d, name), { format: 'qcow2', size });
      const dev = await openImage(join(d, name), { format: 'qcow2', readOnly: false });
      await dev.write(content, 0);
      await dev.close();
    };
    await makeQcow2('code.fd', armCode());
    await makeQcow2('vars.img', varsImage(0xc0000));
    const r = await prepareFirmware({
      arch: 'aarch64',
      code: join(d, 'code.fd'),
      varsTemplate: join(d, 'vars.img'),
      outDir: join(d, 'vm'),
    });
    expect(r.code.format).toBe('qcow2');
    expect(r.code.path.endsWith('code.qcow2')).toBe(true);
    expect(r.code.volumes.map((v) => [v.offset, v.kind])).toEqual([[0x1000, 'ffs2']]);
    expect(r.vars).toMatchObject({ format: 'qcow2', volumes: [{ offset: 0, kind: 'nvram' }] });
    expect(r.qemuArgs[1]).toContain('format=qcow2');

    await makeQcow2('junk.qcow2', new Uint8Array(0x10000).fill(0x41));
    await expect(
      prepareFirmware({ arch: 'aarch64', code: join(d, 'junk.qcow2'), outDir: join(d, 'vm4') }),
    ).rejects.toThrow(/junk.qcow2' is not UEFI firmware: no valid firmware volume header/);
    await makeQcow2('small.qcow2', armCode(), 2 * 1024 * 1024);
    await expect(
      prepareFirmware({ arch: 'aarch64', code: join(d, 'small.qcow2'), outDir: join(d, 'vm3') }),
    ).rejects.toThrow(/qcow2 image of 2097152 bytes; the pflash device needs exactly 67108864/);
    // A backing file is refused from the header, before the image is opened.
    const q = Buffer.from(await readFile(join(d, 'code.fd')));
    q.writeBigUInt64BE(BigInt(q.length - 8), 8);
    q.writeUInt32BE(4, 16);
    await files(d, { 'backed.fd': q });
    await expect(
      prepareFirmware({ arch: 'aarch64', code: join(d, 'backed.fd'), outDir: join(d, 'vm2') }),
    ).rejects.toThrow(/qcow2 image with a backing file/);
  });
});
