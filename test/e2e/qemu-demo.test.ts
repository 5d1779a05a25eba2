// `vmforge demo`: builds a UEFI-bootable qcow2 with vmforge, boots it, shows the marker; with
// tools missing it names them and the Debian packages to install, and starts nothing.
import { expect, it } from 'vitest';
import { runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

describeWithTools(['qemu-system-x86_64', 'mkfs.fat', 'mcopy'], 'vmforge demo', () => {
  it('boots the image it built and shows the marker', async () => {
    const r = await runBin('vmforge', ['demo', '--arch', 'x86_64', '--timeout', '120'], {
      timeoutMs: 150_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^vmforge demo: building a UEFI-bootable qcow2 image in /);
    expect(r.stdout).toContain('vmforge demo: booting it under UEFI (x86_64, q35)');
    expect(r.stdout).toMatch(
      /the guest printed "vmforge demo: booted" after [\d.]+ s:\n {2}vmforge demo: booted\n$/,
    );
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
