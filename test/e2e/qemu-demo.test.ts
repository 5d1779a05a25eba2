// `vmforge demo`: builds a UEFI-bootable qcow2 with vmforge, exports it with vmforge's NBD server,
// boots QEMU from the export's nbd+unix:// URI, shows the marker; with tools missing it names
// them and the Debian packages to install, and starts nothing.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

describeWithTools(['qemu-system-x86_64', 'mkfs.fat', 'mcopy'], 'vmforge demo', () => {
  it('boots the image it built from its NBD export and shows the marker', async () => {
    // NODE_DEBUG=vmforge:qemu logs QEMU's argv: the only disk must be the NBD export.
    const r = await runBin('vmforge', ['demo', '--arch', 'x86_64', '--timeout', '120'], {
      timeoutMs: 150_000,
      env: { ...process.env, LC_ALL: 'C', NODE_DEBUG: 'vmforge:qemu' },
    });
    const debugLines = r.stderr.split('\n').filter((l) => /^VMFORGE:QEMU \d+: /.test(l));
    expect(r.stderr.split('\n').filter((l) => l && !debugLines.includes(l))).toEqual([]);
    expect(r.code).toBe(0);
    const workDir = /^vmforge demo: building a UEFI-bootable qcow2 image in (.+)$/m.exec(
      r.stdout,
    )?.[1];
    expect(workDir).toBeDefined();
    const socket = join(workDir!, 'nbd.sock');
    expect(r.stdout).toContain(
      `vmforge demo: exporting it over NBD on ${socket} (export 'demo')\n`,
    );
    expect(r.stdout).toContain(
      `vmforge demo: booting nbd+unix:///demo?socket=${socket} under UEFI (x86_64, q35)\n`,
    );
    expect(r.stdout).toMatch(
      /the guest printed "vmforge demo: booted" after [\d.]+ s:\n {2}vmforge demo: booted\n$/,
    );
    const spawn = debugLines.find((l) => / spawn \S*qemu-system-x86_64 /.test(l));
    const blockdevs = [...(spawn ?? '').matchAll(/-blockdev (\{\S*\})/g)].map(
      (m) => JSON.parse(m[1]!) as Record<string, unknown>,
    );
    expect(spawn).not.toContain('demo.qcow2'); // QEMU never opens the image file itself
    expect(blockdevs).toContainEqual(
      expect.objectContaining({
        driver: 'nbd',
        server: { type: 'unix', path: socket },
        export: 'demo',
      }),
    );
    expect(await exists(workDir!)).toBe(false);
  });

  it('names what to install when tools are missing', async () => {
    const r = await runBin('vmforge', ['demo', '--arch', 'aarch64'], {
      env: { PATH: '/nonexistent' },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^vmforge demo: the demo needs qemu-system-aarch64, mkfs.fat, mcopy.*; install with: apt-get install qemu-system-arm dosfstools mtools/,
    );
  });
});
