// Guest devices: disks (-blockdev node graph + -device), NICs, shares, display. Every -device
// is JSON (never mixed with legacy -device text: BDF auto-assignment clashes, reference §3.1).

import type { CacheMode, VmModel } from '../model.js';
import type { LaunchPlan, PlannedDisk } from '../plan.js';
import { json, opts, type PciPlacer } from './options.js';

/** cache= → (cache.direct, cache.no-flush, device write-cache), qemu-options.hx "-drive cache". */
const CACHE: Record<CacheMode, { direct: boolean; noFlush: boolean; writeCache: boolean }> = {
  writeback: { direct: false, noFlush: false, writeCache: true },
  none: { direct: true, noFlush: false, writeCache: true },
  writethrough: { direct: false, noFlush: false, writeCache: false },
  directsync: { direct: true, noFlush: false, writeCache: false },
  unsafe: { direct: false, noFlush: true, writeCache: true },
};

/**
 * The -blockdev chain of one disk: protocol node (file or nbd) → format node, and for
 * `snapshot` a qcow2 overlay whose backing is named explicitly, so QEMU probes nothing.
 * Returns the arguments and the node name the device attaches to.
 */
export function diskBlockdevs(d: PlannedDisk): { args: string[]; node: string } {
  const m = d.model;
  const cache = CACHE[m.cache];
  // Default (writeback) is left implicit; other modes say both flags.
  const cacheOpt =
    m.cache === 'writeback' ? undefined : { direct: cache.direct, 'no-flush': cache.noFlush };
  const discard = m.discard ? 'unmap' : undefined;
  const baseReadOnly = m.readonly || d.overlay !== undefined;
  const args: string[] = [];
  const proto = `${m.id}-proto`;
  if (m.source.kind === 'file') {
    args.push(
      '-blockdev',
      json({
        driver: 'file',
        'node-name': proto,
        filename: m.source.path,
        'read-only': baseReadOnly,
        cache: cacheOpt,
        aio: m.aio,
        discard,
      }),
    );
  } else {
    const s = m.source.server;
    args.push(
      '-blockdev',
      json({
        driver: 'nbd',
        'node-name': proto,
        server:
          s.type === 'unix'
            ? { type: 'unix', path: s.path }
            : { type: 'inet', host: s.host, port: s.port },
        export: m.source.export,
        'read-only': baseReadOnly,
        cache: cache.noFlush ? { 'no-flush': true } : undefined,
      }),
    );
  }
  const base = d.overlay ? `${m.id}-base` : m.id;
  args.push(
    '-blockdev',
    json({
      driver: d.format,
      'node-name': base,
      file: proto,
      'read-only': baseReadOnly,
      cache: cacheOpt,
      discard,
    }),
  );
  if (d.overlay) {
    args.push(
      '-blockdev',
      json({
        driver: 'file',
        'node-name': `${m.id}-overlay-file`,
        filename: d.overlay,
        cache: cacheOpt,
        discard,
      }),
    );
    args.push(
      '-blockdev',
      json({
        driver: 'qcow2',
        'node-name': m.id,
        file: `${m.id}-overlay-file`,
        backing: base,
        cache: cacheOpt,
        discard,
      }),
    );
  }
  return { args, node: m.id };
}

/** Controllers created on demand (one virtio-scsi HBA, one AHCI on virt). */
interface Controllers {
  scsi: string | undefined;
  ahci: string | undefined;
  ideNext: number;
  scsiNext: number;
}

export function diskArgs(plan: LaunchPlan, pci: PciPlacer): string[] {
  const family = plan.model.machine.family;
  const ctl: Controllers = { scsi: undefined, ahci: undefined, ideNext: 0, scsiNext: 0 };
  const blockdevs: string[] = [];
  const devices: string[] = [];
  for (const d of plan.disks) {
    const m = d.model;
    const { args, node } = diskBlockdevs(d);
    blockdevs.push(...args);
    const writeCache = CACHE[m.cache].writeCache ? 'on' : 'off';
    const common = { id: m.id, drive: node, bootindex: m.bootindex };
    let dev: Record<string, unknown>;
    switch (m.interface) {
      case 'virtio-blk':
        dev = {
          driver: 'virtio-blk-pci',
          ...common,
          bus: pci.bus(),
          'write-cache': writeCache,
          serial: m.serial,
        };
        break;
      case 'nvme':
        // nvme requires a serial number (hw/nvme/ctrl.c "serial property not set").
        dev = {
          driver: 'nvme',
          ...common,
          bus: pci.bus(),
          'write-cache': writeCache,
          serial: m.serial ?? `vmforge-${m.id}`,
        };
        break;
      case 'virtio-scsi': {
        if (!ctl.scsi) {
          ctl.scsi = 'scsi0';
          devices.push(
            '-device',
            json({ driver: 'virtio-scsi-pci', id: ctl.scsi, bus: pci.bus() }),
          );
        }
        const cd = m.media === 'cdrom';
        dev = {
          driver: cd ? 'scsi-cd' : 'scsi-hd',
          ...common,
          bus: `${ctl.scsi}.0`,
          channel: 0,
          'scsi-id': ctl.scsiNext++,
          lun: 0,
          ...(cd ? {} : { 'write-cache': writeCache }),
          serial: m.serial,
        };
        break;
      }
      case 'ide': {
        const cd = m.media === 'cdrom';
        const n = ctl.ideNext++;
        let bus: string;
        let unit: number | undefined;
        if (family === 'q35')
          bus = `ide.${n}`; // ICH9 AHCI built into q35: one device per port
        else if (family === 'pc') {
          bus = `ide.${Math.floor(n / 2)}`; // PIIX: two buses, master and slave
          unit = n % 2;
        } else {
          if (!ctl.ahci) {
            ctl.ahci = 'ahci0';
            devices.push('-device', json({ driver: 'ich9-ahci', id: ctl.ahci, bus: pci.bus() }));
          }
          bus = `${ctl.ahci}.${n}`;
        }
        dev = {
          driver: cd ? 'ide-cd' : 'ide-hd',
          ...common,
          bus,
          unit,
          ...(cd ? {} : { 'write-cache': writeCache }),
          serial: m.serial,
        };
        break;
      }
    }
    devices.push('-device', json(dev));
  }
  return [...blockdevs, ...devices];
}

export function networkArgs(model: VmModel, pci: PciPlacer): string[] {
  const args: string[] = [];
  for (const n of model.networks) {
    if (n.kind === 'user') {
      args.push(
        '-netdev',
        opts('user', [['id', n.id], ...n.hostfwd.map((f): [string, string] => ['hostfwd', f])]),
      );
    } else {
      args.push(
        '-netdev',
        opts('tap', [
          ['id', n.id],
          ['ifname', n.ifname],
          ['script', n.script ?? 'no'],
          ['downscript', n.downscript ?? 'no'],
        ]),
      );
    }
    args.push(
      '-device',
      json({ driver: n.model, id: `nic-${n.id}`, netdev: n.id, mac: n.mac, bus: pci.bus() }),
    );
  }
  return args;
}

export function shareArgs(plan: LaunchPlan, pci: PciPlacer): string[] {
  const args: string[] = [];
  for (const [i, s] of plan.model.shares.entries()) {
    if (s.kind === '9p') {
      args.push(
        '-fsdev',
        opts('local', [
          ['id', s.id],
          ['path', s.path],
          ['security_model', s.securityModel],
          ['readonly', s.readonly ? true : undefined],
        ]),
      );
      args.push(
        '-device',
        json({
          driver: 'virtio-9p-pci',
          id: `dev-${s.id}`,
          fsdev: s.id,
          mount_tag: s.tag,
          bus: pci.bus(),
        }),
      );
    } else {
      args.push(
        '-chardev',
        opts('socket', [
          ['id', s.id],
          ['path', plan.virtiofsSockets[i]],
        ]),
      );
      args.push(
        '-device',
        json({
          driver: 'vhost-user-fs-pci',
          id: `dev-${s.id}`,
          chardev: s.id,
          tag: s.tag,
          bus: pci.bus(),
        }),
      );
    }
  }
  return args;
}

export function displayArgs(model: VmModel, pci: PciPlacer): string[] {
  const d = model.display;
  if (d.kind === 'none') return ['-display', 'none'];
  const args = ['-display', d.kind === 'vnc' ? `vnc=${d.vnc}` : d.kind];
  if (model.arch === 'x86_64') {
    args.push('-device', json({ driver: 'VGA', id: 'video0' })); // PS/2 input is built in
  } else {
    // virt has no legacy VGA or PS/2: virtio-gpu plus USB keyboard and tablet.
    args.push('-device', json({ driver: 'virtio-gpu-pci', id: 'video0', bus: pci.bus() }));
    args.push('-device', json({ driver: 'qemu-xhci', id: 'usb0', bus: pci.bus() }));
    args.push('-device', json({ driver: 'usb-kbd', id: 'kbd0', bus: 'usb0.0' }));
    args.push('-device', json({ driver: 'usb-tablet', id: 'tablet0', bus: 'usb0.0' }));
  }
  return args;
}
