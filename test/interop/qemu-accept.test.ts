// Real QEMU accepts every golden argv: each feature spec is started paused (-S) under TCG, and
// QMP must show the machine the spec describes — CPUs and topology (query-cpus-fast,
// query-hotpluggable-cpus), memory backends (query-memdev, query-memory-devices), devices
// behind their root ports (query-pci), disks with their format, read-only and cache flags
// (query-block), machine and CPU properties (qom-get) — then QEMU is told to quit.
import { mkdir, stat, writeFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import {
  normalizeSpec,
  resolveModelPaths,
  Vm,
  type LaunchPlan,
  type QmpClient,
  type VmModel,
} from '../../src/qemu/index.js';
import { FEATURE_SPECS, type FeatureFile } from '../qemu/feature-specs.js';
import { createImage } from '../../src/image/index.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { describeWithTools } from '../support/tools.js';

const MiB = 1024 * 1024;

async function makeFile(dir: string, f: FeatureFile): Promise<void> {
  const p = join(dir, f.path);
  if (f.kind === 'dir') await mkdir(p, { recursive: true });
  else if (f.kind === 'qcow2') {
    await createImage(p, { format: 'qcow2', size: f.size ?? MiB }); // made by vmforge
  } else if (f.kind === 'dtb') {
    const r = await run('qemu-system-aarch64', [
      '-machine',
      `virt,dumpdtb=${p}`,
      '-cpu',
      'max',
      '-nodefaults',
      '-display',
      'none',
    ]);
    expect(r.code, r.stderr).toBe(0);
  } else {
    await writeFile(p, '');
    await truncate(p, f.size ?? 1024 * 1024);
  }
}

interface PciDevice {
  qdev_id: string;
  pci_bridge?: { devices?: PciDevice[] };
}

function pciIds(devs: PciDevice[]): string[] {
  return devs.flatMap((d) => [d.qdev_id, ...pciIds(d.pci_bridge?.devices ?? [])]);
}

interface BlockInfo {
  qdev?: string;
  inserted?: {
    file: string;
    ro: boolean;
    drv: string;
    backing_file_depth: number;
    cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  };
}

const CACHE_FLAGS = {
  writeback: { writeback: true, direct: false, 'no-flush': false },
  none: { writeback: true, direct: true, 'no-flush': false },
  writethrough: { writeback: false, direct: false, 'no-flush': false },
  directsync: { writeback: false, direct: true, 'no-flush': false },
  unsafe: { writeback: true, direct: false, 'no-flush': true },
};

/** A qom-get value in spec text: booleans and OnOffAuto as on/off. */
function qomText(v: unknown): string {
  return v === true ? 'on' : v === false ? 'off' : String(v);
}

/** The PCI device `id` sits on a root port's bus (or pci.0/pcie.0 when `port` is undefined). */
async function expectOnBus(qmp: QmpClient, id: string, pcie: boolean): Promise<void> {
  const bus = await qmp.execute<string>('qom-get', {
    path: `/machine/peripheral/${id}`,
    property: 'parent_bus',
  });
  if (pcie) expect(bus, `${id} behind its own root port`).toMatch(/\/peripheral\/(rp\d+)\/\1$/);
  else expect(bus, `${id} on pci.0`).toMatch(/pci\.0$/);
}

async function checkMachine(qmp: QmpClient, m: VmModel, plan: LaunchPlan): Promise<void> {
  const status = await qmp.execute<{ status: string }>('query-status');
  expect(status.status).toBe(m.incoming ? 'inmigrate' : 'prelaunch');
  if (m.name) expect(await qmp.execute('query-name')).toEqual({ name: m.name });
  if (m.uuid) expect(await qmp.execute('query-uuid')).toEqual({ UUID: m.uuid });

  for (const [key, value] of m.machine.props) {
    const got = await qmp.execute('qom-get', { path: '/machine', property: key });
    expect(qomText(got), `machine property ${key}`).toBe(value);
  }

  // CPUs: boot + cold-plugged present, model and features applied, NUMA placement.
  const cpus =
    await qmp.execute<{ 'cpu-index': number; 'qom-path': string; props: Record<string, number> }[]>(
      'query-cpus-fast',
    );
  expect(cpus).toHaveLength(m.smp.cpus + m.smp.coldplug.length);
  const type = await qmp.execute<string>('qom-get', {
    path: cpus[0]!['qom-path'],
    property: 'type',
  });
  const arch = m.arch === 'aarch64' ? 'arm' : 'x86_64';
  expect(type).toBe(`${m.cpu.model === 'auto' ? 'max' : m.cpu.model}-${arch}-cpu`);
  for (const [feature, value] of m.cpu.features) {
    const got = await qmp.execute('qom-get', { path: cpus[0]!['qom-path'], property: feature });
    expect(qomText(got), `cpu property ${feature}`).toBe(value);
  }
  for (const node of m.memory.numa) {
    for (const c of cpus.filter((c) => node.cpus.includes(c['cpu-index'])))
      expect(c.props['node-id']).toBe(node.id);
  }
  if (m.machine.family !== 'virt') {
    const slots =
      await qmp.execute<{ props: Record<string, number>; 'qom-path'?: string }[]>(
        'query-hotpluggable-cpus',
      );
    expect(slots).toHaveLength(m.smp.maxcpus);
    const distinct = (k: string): number => new Set(slots.map((s) => s.props[k])).size;
    expect(distinct('socket-id')).toBe(m.smp.sockets);
    expect(distinct('die-id')).toBe(m.smp.dies);
    expect(distinct('core-id')).toBe(m.smp.cores);
    expect(distinct('thread-id')).toBe(m.smp.threads);
    for (const c of m.smp.coldplug) {
      const s = slots.find(
        (s) =>
          s.props['socket-id'] === c.socket &&
          s.props['die-id'] === c.die &&
          s.props['core-id'] === c.core &&
          s.props['thread-id'] === c.thread,
      );
      expect(s?.['qom-path'], 'cold-plugged CPU present').toBeDefined();
    }
  } else {
    const sockets = new Set(cpus.map((c) => c.props['socket-id'])).size;
    expect(sockets).toBe(
      Math.min(
        m.smp.sockets,
        Math.ceil(m.smp.cpus / (m.smp.clusters * m.smp.cores * m.smp.threads)),
      ),
    );
  }

  // Memory: backends and their sizes, DIMMs.
  const memdevs = await qmp.execute<
    {
      id?: string;
      size: number;
      share: boolean;
      prealloc: boolean;
      'host-nodes': number[];
      policy: string;
    }[]
  >('query-memdev');
  const ram = memdevs.filter((d) => !d.id?.startsWith('mem-dimm'));
  if (m.memory.numa.length > 0 || m.memory.backendExplicit) {
    expect(ram.reduce((s, d) => s + d.size, 0)).toBe(m.memory.size);
    for (const n of m.memory.numa.filter((n) => n.memory > 0)) {
      const dev = memdevs.find((d) => d.id === `ram-node${n.id}`);
      expect(dev?.size).toBe(n.memory);
      expect(dev?.['host-nodes']).toEqual(n.hostNodes ?? []);
      expect(dev?.policy).toBe(n.policy ?? 'default');
    }
    const b = m.memory.backend;
    if (b.kind !== 'hugepages')
      for (const d of ram) {
        expect(d.share).toBe(b.share);
        expect(d.prealloc).toBe(b.prealloc);
      }
  }
  if (m.memory.dimms.length > 0) {
    const devs =
      await qmp.execute<{ type: string; data: { id: string; size: number; node: number } }[]>(
        'query-memory-devices',
      );
    for (const d of m.memory.dimms) {
      const dev = devs.find((x) => x.data.id === d.id);
      expect(dev?.type).toBe(d.type === 'nvdimm' ? 'nvdimm' : 'dimm');
      expect(dev?.data.size).toBe(d.size);
      if (d.node !== undefined) expect(dev?.data.node).toBe(d.node);
    }
  }

  // Devices: one root port per PCI device on pcie.0 (query-pci; the secondary buses are only
  // numbered once firmware runs, so placement behind the ports is read from QOM).
  const pci = await qmp.execute<{ bus: number; devices: PciDevice[] }[]>('query-pci');
  const ids = new Set(pci.flatMap((b) => pciIds(b.devices)));
  const pcie = m.machine.family !== 'pc';
  const pciDevices = [
    ...m.disks
      .filter((d) => d.interface === 'virtio-blk' || d.interface === 'nvme')
      .map((d) => d.id),
    ...(m.disks.some((d) => d.interface === 'virtio-scsi') ? ['scsi0'] : []),
    ...(m.machine.family === 'virt' && m.disks.some((d) => d.interface === 'ide') ? ['ahci0'] : []),
    ...m.networks.map((n) => `nic-${n.id}`),
    ...m.shares.map((s) => `dev-${s.id}`),
    ...(m.display.kind !== 'none' && m.arch === 'aarch64' ? ['video0', 'usb0'] : []),
  ];
  if (m.display.kind !== 'none' && m.arch === 'x86_64') expect(ids).toContain('video0'); // VGA on pcie.0
  for (const id of pciDevices) await expectOnBus(qmp, id, pcie);
  const rootPorts = [...ids].filter((i) => /^rp\d+$/.test(i));
  expect(rootPorts).toHaveLength(pcie ? pciDevices.length : 0);
  if (!pcie) for (const id of pciDevices) expect(ids).toContain(id);

  if (m.display.kind === 'vnc') {
    const vnc = await qmp.execute<{ enabled: boolean; host: string; service: string }>('query-vnc');
    const [host, display] = m.display.vnc.split(/:(?=\d+$)/);
    expect(vnc).toMatchObject({ enabled: true, host, service: String(5900 + Number(display)) });
  }
  for (const n of m.networks) {
    if (n.kind === 'tap' && n.ifname) {
      const info = await qmp.hmp('info network');
      expect(info).toContain(`ifname=${n.ifname}`);
    }
  }

  // Disks: format, read-only, cache mode; firmware on pflash.
  const blocks = await qmp.execute<BlockInfo[]>('query-block');
  for (const d of m.disks) {
    const b = blocks.find((x) => x.qdev?.split('/').includes(d.id));
    expect(b?.inserted, `query-block entry for ${d.id}`).toBeDefined();
    const ins = b!.inserted!;
    expect(ins.drv).toBe(
      d.snapshot
        ? 'qcow2'
        : (d.format ??
            (d.source.kind === 'file' && d.source.path.endsWith('.qcow2') ? 'qcow2' : 'raw')),
    );
    expect(ins.ro).toBe(d.readonly);
    expect(ins.cache).toEqual(CACHE_FLAGS[d.cache]);
    if (d.source.kind === 'file' && !d.snapshot) expect(ins.file).toBe(d.source.path);
  }
  if (m.firmware.type === 'uefi') {
    // Per-VM copies in the run directory (src/edk2 prepare), never the shared templates.
    const fw = plan.firmware!;
    expect(fw.vars.startsWith(`${plan.runDir}/`)).toBe(true);
    expect(blocks.find((x) => x.inserted?.file === fw.code)?.inserted?.ro).toBe(true);
    expect(blocks.find((x) => x.inserted?.file === fw.vars)?.inserted?.ro).toBe(false);
    if (m.arch === 'aarch64') {
      for (const f of [fw.code, fw.vars]) expect((await stat(f)).size).toBe(64 * MiB); // pflash banks
    }
  }
}

describeWithTools(
  ['qemu-system-aarch64', 'qemu-system-x86_64', 'qemu-img'],
  'real QEMU accepts every golden argv',
  () => {
    for (const f of FEATURE_SPECS) {
      const title = `${f.name}${f.accept === false ? ` (golden only: ${f.acceptNote})` : ''}`;
      if (f.accept === false) continue;
      if (f.needsRoot && process.getuid?.() !== 0) {
        it.skip(`${title} [skipped: needs root for a tap device]`, () => undefined);
        continue;
      }
      it(title, async () => {
        const dir = await tempDir('vmforge-accept-');
        for (const file of f.files ?? []) await makeFile(dir, file);
        const model = resolveModelPaths(normalizeSpec(structuredClone(f.spec)), dir);
        const vm = await Vm.launch(model, { paused: true, runDir: join(dir, 'run') });
        try {
          await checkMachine(vm.qmp, model, vm.plan);
        } finally {
          const { step, exit } = await vm.stop({ powerdownTimeoutMs: 0 });
          expect(step).toBe('quit');
          expect(exit.code).toBe(0);
        }
      });
    }
  },
);
