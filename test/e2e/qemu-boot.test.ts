// End to end through the built CLI: a FAT disk whose startup.nsh prints a marker and powers off
// boots under UEFI on aarch64 (virt, cpu max) and x86_64 (q35); `vmforge run --wait-for` exits 0.
// A marker that never comes ends with exit 124 within the timeout and the serial tail; a guest
// that powers off first ends with exit 2. TCG boots are slow: four boots, one at a time.
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';
import { makeUefiDisk, MARKER_RE, MARKER_SCRIPT } from '../qemu/fat-disk.js';

const TOOLS = ['qemu-system-aarch64', 'qemu-system-x86_64', 'qemu-img', 'mkfs.fat', 'mcopy'];

async function runDirs(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((n) => n.startsWith('vmforge-e2e'));
}

describeWithTools(TOOLS, 'vmforge run: UEFI boot to a marker', () => {
  let dir: string;
  let disk: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmforge-boot-'));
    disk = (await makeUefiDisk(dir, 'boot', MARKER_SCRIPT)).qcow2;
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  async function spec(name: string, body: string): Promise<string> {
    const p = join(dir, `${name}.yaml`);
    await writeFile(p, `name: e2e-${name}\n${body}`);
    return p;
  }

  it('aarch64 virt, cpu max: exits 0 once the marker is on the serial console', async () => {
    const s = await spec(
      'arm',
      `arch: aarch64\ncpu: max\nmemory: 512M\ndisks:\n  - path: ${disk}\n    snapshot: false\n`,
    );
    const r = await runBin(
      'vmforge',
      ['run', s, '--wait-for', MARKER_RE, '--timeout', '120', '--serial-log', join(dir, 'arm.log')],
      { timeoutMs: 150_000 },
    );
    expect(r.stderr).toMatch(/matched "vmforge boot marker" on the serial console after/);
    // aarch64 on this x86 host (or any host without a usable KVM): TCG, said out loud.
    if (process.arch !== 'arm64')
      expect(r.stderr).toContain('accel auto: using TCG because KVM cannot run a aarch64 guest');
    expect(r.code).toBe(0);
    expect((await stat(join(dir, 'arm.log'))).size).toBeGreaterThan(0);
  });

  it('x86_64 q35: exits 0 once the marker is on the serial console (also shown on stdout)', async () => {
    const before = await runDirs();
    const s = await spec(
      'x86',
      `arch: x86_64\nmachine: q35\nmemory: 512M\ndisks: [${disk}]\nserial: { console: true }\n`,
    );
    const r = await runBin('vmforge', ['run', s, '--wait-for', MARKER_RE, '--timeout', '120'], {
      timeoutMs: 150_000,
    });
    expect(r.stderr).toMatch(/matched "vmforge boot marker"/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('vmforge boot marker'); // serial console on vmforge's stdout
    expect(await runDirs()).toEqual(before); // run directory removed
  });

  it('a marker that never appears: exit 124 within the timeout, with the serial tail', async () => {
    const s = await spec('nomarker', 'arch: x86_64\nmemory: 256M\n'); // no disk: the UEFI shell waits at its prompt
    const started = Date.now();
    const r = await runBin(
      'vmforge',
      ['run', s, '--wait-for', 'never printed', '--timeout', '15'],
      { timeoutMs: 60_000 },
    );
    expect(r.code).toBe(124);
    expect(Date.now() - started).toBeLessThan(45_000);
    expect(r.stderr).toMatch(
      /^vmforge run: (.*\n)?vmforge run: timed out after 15 s waiting for \/never printed\/ on the serial console; last serial output:\n/,
    );
    expect(r.stderr).toMatch(/Shell>|UEFI|BdsDxe/);
  });

  it('a guest that powers off before the marker: exit 2, with the serial tail', async () => {
    const s = await spec('early', `arch: x86_64\nmemory: 256M\ndisks: [${disk}]\n`);
    const r = await runBin('vmforge', ['run', s, '--wait-for', 'not this', '--timeout', '120'], {
      timeoutMs: 150_000,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'QEMU exited with status 0 before /not this/ appeared on the serial console; last serial output:',
    );
    expect(r.stderr).toContain('vmforge boot marker');
  });
});
