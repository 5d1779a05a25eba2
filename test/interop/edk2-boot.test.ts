// Interop: prepared pflash pairs boot QEMU (TCG) into the UEFI shell, seen on the serial
// console — Debian's AAVMF on virt (-cpu max), Debian's OVMF on q35, the same AAVMF converted to
// qcow2 by qemu-img (prepare must sniff it), and firmware that `fetch` stored from an HTTP server.

import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { fetchFirmware, prepareFirmware } from '../../src/edk2/index.js';
import { runFirmware } from '../../src/cli/firmware/index.js';
import { captureIO } from '../../src/cli/io.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import {
  bootToShell,
  DEBIAN_QEMU_EFI,
  describeWithPackages,
  serveBytes,
  startServer,
  type TestServer,
} from './edk2-support.js';

const MiB64 = 64 * 1024 * 1024;
const dirs = ['/usr/share/qemu/firmware'];

describeWithPackages(
  {
    files: {
      '/usr/share/AAVMF/AAVMF_CODE.fd': 'qemu-efi-aarch64',
      [DEBIAN_QEMU_EFI]: 'qemu-efi-aarch64',
      '/usr/share/OVMF/OVMF_CODE_4M.fd': 'ovmf',
    },
    tools: ['qemu-system-aarch64', 'qemu-system-x86_64', 'qemu-img'],
  },
  'prepared firmware boots to the UEFI shell',
  () => {
    let server: TestServer;
    let fd: Buffer;
    beforeAll(async () => {
      fd = await readFile(DEBIAN_QEMU_EFI);
      server = await startServer({ '/QEMU_EFI.fd': (req, res) => serveBytes(fd, res, req) });
    });
    afterAll(() => server.close());

    it('aarch64 virt: the CLI prepares a 64 MiB pair from the descriptors, QEMU reaches Shell>', async () => {
      const out = await tempDir();
      const cap = captureIO({ PATH: process.env['PATH'], HOME: out });
      const code = await runFirmware(
        [
          'prepare',
          '--arch',
          'aarch64',
          '--machine',
          'virt',
          '--no-secure-boot',
          '--out',
          out,
          '--cache-dir',
          join(out, 'c'),
          '--json',
        ],
        cap.io,
      );
      expect(cap.err).toBe('');
      expect(code).toBe(0);
      const r = JSON.parse(cap.out) as {
        code: string;
        vars: string;
        format: string;
        'qemu-args': string[];
      };
      expect(r.format).toBe('raw');
      expect((await stat(r.code)).size).toBe(MiB64);
      expect((await stat(r.vars)).size).toBe(MiB64);
      const boot = await bootToShell('aarch64', r['qemu-args']);
      expect(boot.serial).toContain('UEFI Interactive Shell');
      expect(boot.reachedShell).toBe(true);
    });

    it('control: the unpadded QEMU_EFI.fd as pflash is refused by QEMU (why prepare pads)', async () => {
      const boot = await bootToShell('aarch64', [
        '-drive',
        `if=pflash,unit=0,format=raw,readonly=on,file=${DEBIAN_QEMU_EFI}`,
      ]);
      expect(boot.reachedShell).toBe(false);
      expect(boot.serial).toMatch(
        /device requires 67108864 bytes, block backend provides 2097152 bytes/,
      );
    });

    it('x86_64 q35: OVMF (no SMM) from the descriptors reaches Shell>', async () => {
      const out = await tempDir();
      const p = await prepareFirmware({
        dirs,
        arch: 'x86_64',
        machine: 'q35',
        secureBoot: false,
        outDir: out,
      });
      expect(p.match?.name).toBe('60-edk2-x86_64.json');
      expect(p.padded).toBe(false);
      const boot = await bootToShell('x86_64', p.qemuArgs);
      expect(boot.reachedShell).toBe(true);
    });

    it('qcow2 firmware (converted with qemu-img) is sniffed as qcow2 and boots', async () => {
      const d = await tempDir();
      for (const [src, dst] of [
        ['/usr/share/AAVMF/AAVMF_CODE.fd', 'code-image.fd'], // a misleading name on purpose
        ['/usr/share/AAVMF/AAVMF_VARS.fd', 'vars-template.qcow2'],
      ]) {
        const r = await run('qemu-img', [
          'convert',
          '-f',
          'raw',
          '-O',
          'qcow2',
          src!,
          join(d, dst!),
        ]);
        expect(r.code).toBe(0);
      }
      const p = await prepareFirmware({
        arch: 'aarch64',
        code: join(d, 'code-image.fd'),
        varsTemplate: join(d, 'vars-template.qcow2'),
        outDir: join(d, 'vm'),
      });
      expect(p.code).toMatchObject({ format: 'qcow2', size: MiB64 });
      expect(p.vars).toMatchObject({ format: 'qcow2', blank: true }); // read through the qcow2 driver
      expect(p.code.volumes.map((v) => [v.offset, v.kind])).toEqual([[0x1000, 'ffs2']]);
      expect(p.qemuArgs.join(' ')).toContain('format=qcow2');
      const info = JSON.parse(
        (await run('qemu-img', ['info', '--output=json', p.code.path])).stdout,
      ) as { format: string };
      expect(info.format).toBe('qcow2');
      const boot = await bootToShell('aarch64', p.qemuArgs);
      expect(boot.reachedShell).toBe(true);
    });

    it('fetched QEMU_EFI.fd (unpadded, no vars) → prepare from the cache descriptor → boots', async () => {
      const cache = await tempDir();
      const sha = createHash('sha256').update(fd).digest('hex');
      const f = await fetchFirmware({
        source: server.url('/QEMU_EFI.fd'),
        sha256: sha,
        arch: 'aarch64',
        cacheDir: cache,
      });
      const p = await prepareFirmware({
        dirs: [join(cache, 'descriptors')],
        arch: 'aarch64',
        outDir: join(cache, 'vm'),
      });
      expect(p.match?.descriptorPath).toBe(f.descriptor);
      expect(p.vars?.blank).toBe(true);
      const boot = await bootToShell('aarch64', p.qemuArgs);
      expect(boot.reachedShell).toBe(true);
    });
  },
);
