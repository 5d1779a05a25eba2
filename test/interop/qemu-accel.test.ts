// accel auto against this host's real /dev/kvm: whatever the probe decides must match what a
// real KVM guest does here. On the development machines /dev/kvm opens but aborts at the first
// vCPU entry, so auto must fall back to TCG and say why.
import { expect, it } from 'vitest';
import { normalizeSpec, resolveAccel, Vm } from '../../src/qemu/index.js';
import { describeWithTools } from '../support/tools.js';

const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';

describeWithTools([`qemu-system-${arch}`], 'accel auto on this host', () => {
  it('agrees with a real KVM guest', async () => {
    const model = normalizeSpec({
      arch,
      memory: '256M',
      firmware: arch === 'x86_64' ? 'bios' : 'uefi',
    });
    const decision = await resolveAccel('auto', arch, model.machine, {
      binary: `qemu-system-${arch}`,
    });
    if (decision.accel === 'tcg') {
      expect(decision.note).toMatch(
        /^accel auto: using TCG because \/dev\/kvm (does not exist|is not accessible|is present but cannot run a guest \(.+\))/,
      );
    } else {
      expect(decision.note).toBeUndefined();
    }
    // Now really run a KVM guest (when there is a /dev/kvm at all) and compare.
    if (decision.note?.includes('does not exist')) return;
    const vm = await Vm.launch(model, {
      accel: { accel: 'kvm', note: undefined },
      paused: true,
    }).catch((e: unknown) => e);
    if (vm instanceof Vm) {
      try {
        await vm.qmp.execute('cont');
        await new Promise((r) => setTimeout(r, 500));
        const status = await vm.qmp
          .execute<{ status: string }>('query-status')
          .catch(() => ({ status: 'gone' }));
        expect(status.status === 'running').toBe(decision.accel === 'kvm');
      } finally {
        await vm.destroy();
      }
    } else {
      expect(decision.accel).toBe('tcg');
    }
  });
});
