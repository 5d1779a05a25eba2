// LaunchPlan → QEMU argv (an array; never a shell string). Pure and deterministic: the golden
// tests pin its output. Shape after libvirt's generated argv and reference §4.6: -nodefaults
// -no-user-config -S, JSON -blockdev/-object/-device, explicit topology, QMP on a socket,
// serial through a chardev with a log.

import type { LaunchPlan } from '../plan.js';
import { diskArgs, displayArgs, networkArgs, shareArgs } from './devices.js';
import { json, opts, PciPlacer } from './options.js';

const MiB = 1024 * 1024;

/** The argv after the binary name. */
export function buildArgs(plan: LaunchPlan): string[] {
  const m = plan.model;
  const args: string[] = [];
  if (m.name) args.push('-name', opts(undefined, [['guest', m.name]]));
  if (m.uuid) args.push('-uuid', m.uuid);

  const machineProps: [string, string | undefined][] = [...m.machine.props];
  for (const [k, v] of plan.firmware?.machineProperties ?? []) {
    // What the firmware needs wins over nothing, but the spec's explicit value is kept: a
    // conflict (smm=off with SMM firmware) then fails in QEMU with its own message.
    if (!machineProps.some(([key]) => key === k)) machineProps.push([k, v]);
  }
  if (plan.firmware) machineProps.push(['pflash0', 'fw-code'], ['pflash1', 'fw-vars']);
  if (plan.memory.machineBackend)
    machineProps.push(['memory-backend', plan.memory.machineBackend.id]);
  args.push('-machine', opts(m.machine.type, machineProps));
  args.push('-accel', plan.accel);
  args.push('-cpu', opts(plan.cpuModel, m.cpu.features));

  const s = m.smp;
  args.push(
    '-smp',
    opts(undefined, [
      ['cpus', s.cpus],
      ['maxcpus', s.maxcpus],
      ['sockets', s.sockets],
      ['dies', m.machine.family === 'virt' ? undefined : s.dies],
      ['clusters', m.machine.family === 'virt' ? s.clusters : undefined],
      ['cores', s.cores],
      ['threads', s.threads],
    ]),
  );
  const mem = m.memory;
  args.push(
    '-m',
    opts(undefined, [
      ['size', `${mem.size / MiB}M`],
      ['slots', mem.slots],
      ['maxmem', mem.maxmem === undefined ? undefined : `${mem.maxmem / MiB}M`],
    ]),
  );
  args.push('-nodefaults', '-no-user-config');
  // Paused until the launcher has its QMP connection (and for migration, until it arrives).
  args.push('-S');

  if (plan.firmware) {
    const fw = plan.firmware;
    args.push(
      '-blockdev',
      json({ driver: 'file', 'node-name': 'fw-code-file', filename: fw.code, 'read-only': true }),
      '-blockdev',
      json({ driver: fw.format, 'node-name': 'fw-code', file: 'fw-code-file', 'read-only': true }),
      '-blockdev',
      json({ driver: 'file', 'node-name': 'fw-vars-file', filename: fw.vars }),
      '-blockdev',
      json({ driver: fw.format, 'node-name': 'fw-vars', file: 'fw-vars-file' }),
    );
    const globals = new Set(fw.globals ?? []);
    if (m.firmware.type === 'uefi' && m.firmware.secureBoot && m.arch === 'x86_64') {
      // SMM-protected variable store for the secure-boot OVMF build (OvmfPkg/README).
      globals.add('driver=cfi.pflash01,property=secure,value=on');
    }
    for (const g of globals) args.push('-global', g);
  } else if (m.firmware.type === 'bios' && m.firmware.path) {
    args.push('-bios', m.firmware.path);
  }
  if (m.kernel) {
    args.push('-kernel', m.kernel.path);
    if (m.kernel.initrd) args.push('-initrd', m.kernel.initrd);
    if (m.kernel.append !== undefined) args.push('-append', m.kernel.append);
    if (m.kernel.dtb) args.push('-dtb', m.kernel.dtb);
  }

  // Memory backends, NUMA topology, DIMMs.
  const objects = [
    plan.memory.machineBackend,
    ...plan.memory.nodeBackends,
    ...plan.memory.dimmBackends,
  ];
  for (const o of objects) if (o) args.push('-object', json(o));
  for (const n of mem.numa) {
    const backend = plan.memory.nodeBackends[n.id];
    args.push(
      '-numa',
      opts('node', [
        ['nodeid', n.id],
        ...cpuRanges(n.cpus).map((r): [string, string] => ['cpus', r]),
        ['memdev', backend?.id],
      ]),
    );
  }
  for (const n of mem.numa) {
    for (const [dst, val] of n.distances)
      args.push(
        '-numa',
        opts('dist', [
          ['src', n.id],
          ['dst', dst],
          ['val', val],
        ]),
      );
  }

  const devices: string[] = [];
  for (const [i, d] of mem.dimms.entries()) {
    devices.push(
      '-device',
      json({ driver: d.type, id: d.id, memdev: plan.memory.dimmBackends[i]!.id, node: d.node }),
    );
  }
  // Cold-plugged CPUs: the same -device a hotplug would send (docs/system/cpu-hotplug.rst).
  for (const [i, slot] of s.coldplug.entries()) {
    devices.push(
      '-device',
      json({
        driver: `${plan.cpuModel}-${m.arch}-cpu`,
        id: `cpu-cold${i}`,
        'socket-id': slot.socket,
        'die-id': m.machine.family === 'virt' ? undefined : slot.die,
        'core-id': slot.core,
        'thread-id': slot.thread,
      }),
    );
  }

  const pci = new PciPlacer(m.machine.family);
  const pciDevices = [...diskArgs(plan, pci), ...networkArgs(m, pci), ...shareArgs(plan, pci)];
  const display = displayArgs(m, pci);

  if (m.machine.intelIommu) args.push('-device', json({ driver: 'intel-iommu', id: 'iommu0' }));
  args.push(...pci.args(), ...devices, ...pciDevices, ...display);

  // Serial console: a chardev whose output is logged to a file, on stdio too when asked.
  args.push(
    '-chardev',
    m.serial.console
      ? opts('stdio', [
          ['id', 'serial0'],
          // mux=on gives QEMU's console escapes (Ctrl-a x quits, Ctrl-a h helps); signal=off
          // passes Ctrl-C to the guest, as a serial console should.
          ['mux', true],
          ['logfile', plan.serialLog],
          ['signal', false],
        ])
      : opts('file', [
          ['id', 'serial0'],
          ['path', plan.serialLog],
        ]),
  );
  args.push('-serial', 'chardev:serial0');
  // QMP, always (reference §4.1: server=on,wait=off, not the deprecated short booleans).
  const q = plan.qmp;
  args.push(
    '-chardev',
    q.kind === 'unix'
      ? opts('socket', [
          ['id', 'qmp0'],
          ['path', q.path],
          ['server', true],
          ['wait', false],
        ])
      : opts('socket', [
          ['id', 'qmp0'],
          ['host', q.host],
          ['port', q.port],
          ['server', true],
          ['wait', false],
        ]),
  );
  args.push('-mon', 'chardev=qmp0,mode=control');
  // vmforge's own monitor, so the one above stays free for the user while vmforge runs.
  args.push(
    '-chardev',
    opts('socket', [
      ['id', 'qmp-vmforge'],
      ['path', plan.controlSocket],
      ['server', true],
      ['wait', false],
    ]),
  );
  args.push('-mon', 'chardev=qmp-vmforge,mode=control');

  if (m.rtc)
    args.push(
      '-rtc',
      opts(undefined, [
        ['base', m.rtc.base],
        ['clock', m.rtc.clock],
        ['driftfix', m.rtc.driftfix],
      ]),
    );
  for (const e of m.smbios) args.push('-smbios', opts(`type=${e.type}`, e.fields));
  if (m.incoming !== undefined) args.push('-incoming', m.incoming);
  args.push(...m.extraArgs);
  return args;
}

/** Full argv including the binary. */
export function buildArgv(plan: LaunchPlan): string[] {
  return [plan.binary, ...buildArgs(plan)];
}

/** [0,1,2,5] → ["0-2", "5"]. */
export function cpuRanges(cpus: number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    out.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return out;
}
