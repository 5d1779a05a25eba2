// Building blocks for QEMU arguments: QemuOpts "key=value,…" text with commas escaped by
// doubling (util/qemu-option.c), JSON for -device/-object/-blockdev (the stable, typed form;
// reference §4.5), and PCIe root-port placement following docs/pcie.txt and libvirt.

import type { MachineFamily } from '../model.js';

/** Escape a QemuOpts value: a comma inside a value is written as ",,". */
export function optValue(v: string | number | boolean): string {
  const s = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
  return s.replace(/,/g, ',,');
}

/** "first,key=value,…" with every value escaped; undefined values are left out. */
export function opts(
  first: string | undefined,
  pairs: [string, string | number | boolean | undefined][],
): string {
  const parts = first === undefined ? [] : [first];
  for (const [k, v] of pairs) if (v !== undefined) parts.push(`${k}=${optValue(v)}`);
  return parts.join(',');
}

/** JSON with keys in insertion order and undefined members dropped (JSON.stringify does that). */
export function json(obj: Record<string, unknown>): string {
  return JSON.stringify(obj);
}

/**
 * Hands out PCIe root ports on PCIe machines (q35, virt): one per device, eight functions per
 * slot starting at 00:02.0, function 0 multifunction, unique chassis, port 0x10 + n (libvirt's
 * layout, tests/qemuxmlconfdata/pcie-root-port.x86_64-latest.args). On `pc` devices sit on pci.0.
 */
export class PciPlacer {
  readonly #family: MachineFamily;
  readonly ports: Record<string, unknown>[] = [];

  constructor(family: MachineFamily) {
    this.#family = family;
  }

  get pcie(): boolean {
    return this.#family !== 'pc';
  }

  /** The bus for a new PCI(e) device: a fresh root port's id, or undefined on `pc`. */
  bus(): string | undefined {
    if (!this.pcie) return undefined;
    const n = this.ports.length;
    const slot = 2 + Math.floor(n / 8);
    const fn = n % 8;
    const id = `rp${n}`;
    this.ports.push({
      driver: 'pcie-root-port',
      id,
      bus: 'pcie.0',
      chassis: n + 1,
      port: 0x10 + n,
      addr: fn === 0 ? `0x${slot.toString(16)}` : `0x${slot.toString(16)}.0x${fn}`,
      ...(fn === 0 ? { multifunction: true } : {}),
    });
    return id;
  }

  /** `-device` arguments for the root ports handed out so far. */
  args(): string[] {
    return this.ports.flatMap((p) => ['-device', json(p)]);
  }
}
