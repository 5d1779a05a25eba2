// Accelerator choice: auto never picks a /dev/kvm that cannot run the guest, and says why.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { normalizeSpec, resolveAccel, type KvmProbe } from '../../src/qemu/index.js';
import { tempDir } from '../support/tmp.js';

const host = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
const other = host === 'x86_64' ? 'aarch64' : 'x86_64';
const machineOf = (arch: 'aarch64' | 'x86_64') => normalizeSpec({ arch }).machine;
const usable: KvmProbe = () => Promise.resolve({ usable: true, reason: undefined });
const broken: KvmProbe = () =>
  Promise.resolve({ usable: false, reason: 'kvm_buf_set_msrs: Assertion failed' });

async function fakeKvm(): Promise<string> {
  const p = join(await tempDir(), 'kvm');
  await writeFile(p, '');
  return p;
}

describe('resolveAccel', () => {
  it('tcg is taken as asked, without probing', async () => {
    const probe: KvmProbe = () => Promise.reject(new Error('must not probe'));
    expect(await resolveAccel('tcg', host, machineOf(host), { binary: 'x', probe })).toEqual({
      accel: 'tcg',
      note: undefined,
    });
  });

  it('auto uses KVM when the device is there and the probe guest runs', async () => {
    const kvmDevice = await fakeKvm();
    expect(
      await resolveAccel('auto', host, machineOf(host), { binary: 'x', kvmDevice, probe: usable }),
    ).toEqual({ accel: 'kvm', note: undefined });
  });

  it('auto falls back to TCG when /dev/kvm is missing, and says so', async () => {
    const d = await resolveAccel('auto', host, machineOf(host), {
      binary: 'x',
      kvmDevice: '/nonexistent/kvm',
      probe: usable,
    });
    expect(d).toEqual({
      accel: 'tcg',
      note: 'accel auto: using TCG because /nonexistent/kvm does not exist (no KVM on this host)',
    });
  });

  it('auto falls back to TCG when /dev/kvm cannot run a guest', async () => {
    const kvmDevice = await fakeKvm();
    const d = await resolveAccel('auto', host, machineOf(host), {
      binary: 'x',
      kvmDevice,
      probe: broken,
    });
    expect(d.accel).toBe('tcg');
    expect(d.note).toBe(
      `accel auto: using TCG because ${kvmDevice} is present but cannot run a guest (kvm_buf_set_msrs: Assertion failed)`,
    );
  });

  it('auto uses TCG for a foreign architecture', async () => {
    const d = await resolveAccel('auto', other, machineOf(other), { binary: 'x', probe: usable });
    expect(d).toEqual({
      accel: 'tcg',
      note: `accel auto: using TCG because KVM cannot run a ${other} guest on a ${host} host`,
    });
  });

  it('an explicit kvm that cannot work is an error, not a silent fallback', async () => {
    const kvmDevice = await fakeKvm();
    await expect(
      resolveAccel('kvm', host, machineOf(host), { binary: 'x', kvmDevice, probe: broken }),
    ).rejects.toThrow(/^accel kvm: .* is present but cannot run a guest/);
  });
});
