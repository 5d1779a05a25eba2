// Choosing the accelerator. `auto` takes KVM only when it can really run this guest: same
// architecture as the host, /dev/kvm readable and writable, and a probe VM whose vCPU actually
// runs (nested or paravirtual KVMs may open fine and then abort at the first vCPU entry, e.g.
// "kvm_buf_set_msrs: Assertion … failed"). Otherwise TCG, with the reason said out loud.

import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnvironmentError } from '../core/index.js';
import type { AccelChoice, Arch, MachineModel } from './model.js';
import { hostArch } from './spec/machine.js';
import { QmpClient } from './qmp/client.js';

export interface AccelDecision {
  accel: 'kvm' | 'tcg';
  /** Why `auto` did not pick KVM (for the user), undefined when it did or was told. */
  note: string | undefined;
}

export interface KvmProbeResult {
  usable: boolean;
  reason: string | undefined;
}

export type KvmProbe = (
  binary: string,
  arch: Arch,
  machine: MachineModel,
) => Promise<KvmProbeResult>;

export interface ResolveAccelOptions {
  binary: string;
  /** @default '/dev/kvm' */
  kvmDevice?: string;
  /** Replace the probe VM (tests). */
  probe?: KvmProbe;
}

export async function resolveAccel(
  choice: AccelChoice,
  arch: Arch,
  machine: MachineModel,
  options: ResolveAccelOptions,
): Promise<AccelDecision> {
  if (choice === 'tcg') return { accel: 'tcg', note: undefined };
  const why = await kvmUnusableReason(arch, machine, options);
  if (why === undefined) return { accel: 'kvm', note: undefined };
  if (choice === 'kvm') {
    throw new EnvironmentError(`accel kvm: ${why}`, { code: 'VMF_KVM_UNUSABLE' });
  }
  return { accel: 'tcg', note: `accel auto: using TCG because ${why}` };
}

async function kvmUnusableReason(
  arch: Arch,
  machine: MachineModel,
  options: ResolveAccelOptions,
): Promise<string | undefined> {
  const host = hostArch();
  if (host !== arch) return `KVM cannot run a ${arch} guest on a ${host ?? process.arch} host`;
  const dev = options.kvmDevice ?? '/dev/kvm';
  try {
    await access(dev, constants.R_OK | constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? `${dev} does not exist (no KVM on this host)`
      : `${dev} is not accessible (${code ?? 'error'}; add yourself to the kvm group)`;
  }
  const probe = options.probe ?? probeKvm;
  const result = await probe(options.binary, arch, machine);
  return result.usable ? undefined : `${dev} is present but cannot run a guest (${result.reason})`;
}

const cache = new Map<string, Promise<KvmProbeResult>>();

/**
 * Start a tiny KVM guest paused, let its vCPU run for a moment, and ask QMP whether it is still
 * running. The guest is a few bytes of "halt"/"branch to self" as its firmware.
 */
export function probeKvm(
  binary: string,
  arch: Arch,
  machine: MachineModel,
): Promise<KvmProbeResult> {
  const key = `${binary}\0${machine.type}`;
  let p = cache.get(key);
  if (!p) {
    p = runProbe(binary, arch, machine.type);
    cache.set(key, p);
  }
  return p;
}

async function runProbe(binary: string, arch: Arch, machineType: string): Promise<KvmProbeResult> {
  const dir = await mkdtemp(join(tmpdir(), 'vmforge-kvm-probe-'));
  try {
    const bios = join(dir, 'probe.bin');
    // x86: 64 KiB of HLT ending at the reset vector; aarch64: "b ." at address 0.
    await writeFile(
      bios,
      arch === 'x86_64' ? Buffer.alloc(64 * 1024, 0xf4) : Buffer.from([0x00, 0x00, 0x00, 0x14]),
    );
    const args = [
      '-machine',
      machineType,
      '-accel',
      'kvm',
      '-cpu',
      'host',
      '-m',
      '64',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-bios',
      bios,
      '-S',
      '-qmp',
      'stdio',
    ];
    const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const spawned = await new Promise<boolean>((resolve) => {
      child.once('spawn', () => resolve(true));
      child.once('error', () => resolve(false));
    });
    if (!spawned) return { usable: false, reason: `${binary} could not be started` };
    const qmp = new QmpClient(child.stdout, child.stdin, { commandTimeoutMs: 5000 });
    const firstLine = (): string =>
      stderr
        .split('\n')
        .find((l) => /error|assert|fail/i.test(l))
        ?.trim() ??
      (stderr.trim().split('\n')[0] || 'QEMU exited');
    try {
      await qmp.handshake(5000);
      await qmp.execute('cont');
      await new Promise((r) => setTimeout(r, 300));
      const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
      if (!status.running) return { usable: false, reason: `probe guest is ${status.status}` };
      return { usable: true, reason: undefined };
    } catch {
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
      return { usable: false, reason: firstLine() };
    } finally {
      qmp.destroy();
      child.kill('SIGKILL');
      await exited;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
