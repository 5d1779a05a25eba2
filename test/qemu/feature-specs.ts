// One spec per launcher feature. The golden argv test (test/qemu/argv.test.ts) pins each spec's
// argv; the acceptance test (test/interop/qemu-accept.test.ts) starts real QEMU paused with the
// same spec and checks through QMP that the machine is what the spec says.
// Paths are relative: `/vm` for the golden argv, a temporary directory for the real run.

export interface FeatureFile {
  path: string;
  kind: 'raw' | 'qcow2' | 'blob' | 'dir' | 'dtb';
  size?: number;
}

export interface FeatureSpec {
  name: string;
  spec: Record<string, unknown>;
  /** Files the spec refers to; created for the acceptance run. */
  files?: FeatureFile[];
  /** False when real QEMU cannot run it here (needs a tap device, a display, a pending library). */
  accept?: boolean;
  /** Why it is not accepted here. */
  acceptNote?: string;
  /** Needs root (a tap device through /dev/net/tun). */
  needsRoot?: boolean;
}

const MiB = 1024 * 1024;

export const FEATURE_SPECS: FeatureSpec[] = [
  {
    name: 'aarch64-defaults',
    spec: { arch: 'aarch64', accel: 'tcg' },
  },
  {
    name: 'x86_64-defaults',
    spec: { arch: 'x86_64', accel: 'tcg' },
  },
  {
    name: 'aarch64-virt-options',
    spec: {
      name: 'arm-options',
      uuid: '6f1c3a4e-0b9d-4f7e-9d53-2a8e4d7c1b00',
      arch: 'aarch64',
      accel: 'tcg',
      machine: {
        type: 'virt',
        gicVersion: 3,
        its: true,
        iommu: 'smmuv3',
        highmem: true,
        mte: true,
        ras: true,
        virtualization: true,
        secure: false,
      },
      cpu: { model: 'max', features: { sve: true, pmu: true, 'pauth-impdef': true } },
      smp: { cpus: 4, maxcpus: 8, sockets: 2, clusters: 2, cores: 2, threads: 1 },
      memory: '2G',
    },
  },
  {
    name: 'aarch64-kernel-boot',
    spec: {
      arch: 'aarch64',
      accel: 'tcg',
      cpu: 'cortex-a57',
      firmware: 'none',
      kernel: 'Image',
      initrd: 'initrd.img',
      append: 'console=ttyAMA0 root=/dev/vda rw',
      dtb: 'virt.dtb',
      memory: '256M',
    },
    files: [
      { path: 'Image', kind: 'blob', size: 64 * 1024 },
      { path: 'initrd.img', kind: 'blob', size: 4096 },
      { path: 'virt.dtb', kind: 'dtb' },
    ],
  },
  {
    name: 'aarch64-numa',
    spec: {
      arch: 'aarch64',
      accel: 'tcg',
      smp: { cpus: 4, sockets: 2, cores: 2, threads: 1 },
      memory: {
        size: '1G',
        numa: [
          { cpus: '0-1', memory: '768M', distances: { 1: 20 }, hostNodes: [0], policy: 'bind' },
          { cpus: [2, 3], memory: '256M' },
        ],
      },
    },
  },
  {
    name: 'x86_64-q35-topology-hotplug',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      machine: { type: 'q35', smm: true, acpi: true },
      cpu: { model: 'max', features: { pdpe1gb: false } },
      smp: {
        cpus: 2,
        maxcpus: 8,
        sockets: 2,
        dies: 2,
        cores: 2,
        threads: 1,
        coldplug: [{ socket: 1, die: 0, core: 1 }],
      },
      memory: {
        size: '1G',
        slots: 4,
        maxmem: '4G',
        dimms: [
          { size: '256M', node: 1 },
          { type: 'nvdimm', size: '128M', path: 'nvdimm.img' },
        ],
        numa: [
          { cpus: '0-3', memory: '512M', hostNodes: [0], policy: 'preferred' },
          { cpus: '4-7', memory: '512M', hostNodes: 0, policy: 'interleave' },
          { memory: 0 },
        ],
      },
    },
    files: [{ path: 'nvdimm.img', kind: 'raw', size: 128 * MiB }],
  },
  {
    name: 'x86_64-disks',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      disks: [
        { path: 'boot.qcow2', bootindex: 1, serial: 'BOOT-DISK' },
        { path: 'data.raw', interface: 'virtio-scsi', cache: 'none', aio: 'native', discard: true },
        { path: 'cd.iso', interface: 'virtio-scsi', media: 'cdrom', format: 'raw' },
        { path: 'fast.raw', interface: 'nvme', cache: 'unsafe' },
        { path: 'legacy.raw', interface: 'ide', cache: 'writethrough' },
        { path: 'install.iso', interface: 'ide', media: 'cdrom', format: 'raw', bootindex: 2 },
        { path: 'ro.raw', readonly: true, cache: 'directsync' },
      ],
    },
    files: [
      { path: 'boot.qcow2', kind: 'qcow2', size: 64 * MiB },
      { path: 'data.raw', kind: 'raw', size: 16 * MiB },
      { path: 'cd.iso', kind: 'raw', size: 2 * MiB },
      { path: 'fast.raw', kind: 'raw', size: 16 * MiB },
      { path: 'legacy.raw', kind: 'raw', size: 16 * MiB },
      { path: 'install.iso', kind: 'raw', size: 2 * MiB },
      { path: 'ro.raw', kind: 'raw', size: 16 * MiB },
    ],
  },
  {
    name: 'aarch64-disks',
    spec: {
      arch: 'aarch64',
      accel: 'tcg',
      disks: [
        { path: 'root.qcow2' },
        { path: 'sata.raw', interface: 'ide' },
        { path: 'sata.iso', interface: 'ide', media: 'cdrom', format: 'raw' },
      ],
    },
    files: [
      { path: 'root.qcow2', kind: 'qcow2', size: 64 * MiB },
      { path: 'sata.raw', kind: 'raw', size: 16 * MiB },
      { path: 'sata.iso', kind: 'raw', size: 2 * MiB },
    ],
  },
  {
    name: 'x86_64-pc-bios',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      machine: 'pc',
      firmware: 'bios',
      memory: '512M',
      disks: [
        { path: 'a.raw', interface: 'ide' },
        { path: 'b.raw', interface: 'ide' },
        { path: 'c.raw', interface: 'ide' },
        { path: 'd.raw' },
      ],
      network: [{ type: 'user', model: 'e1000' }],
    },
    files: ['a', 'b', 'c', 'd'].map((n) => ({
      path: `${n}.raw`,
      kind: 'raw' as const,
      size: 8 * MiB,
    })),
  },
  {
    name: 'x86_64-network-shares-misc',
    spec: {
      name: 'misc',
      arch: 'x86_64',
      accel: 'tcg',
      network: [
        {
          type: 'user',
          hostfwd: ['tcp:127.0.0.1:0-:22', { protocol: 'udp', hostPort: 0, guestPort: 53 }],
        },
        { type: 'user', model: 'e1000e', mac: '52:54:00:12:34:56' },
      ],
      shares: [
        { type: '9p', path: 'share', tag: 'hostshare', readonly: true },
        { type: '9p', path: 'rw,dir', securityModel: 'mapped-xattr' },
      ],
      serial: { log: 'serial, with comma.log' },
      smbios: [
        { type: 1, serial: 'ds=nocloud;s=http://10.0.2.2:8000/', manufacturer: 'vmforge, inc' },
        { type: 11, value: 'io.systemd.credential:hello=world' },
      ],
      rtc: { base: 'utc', clock: 'vm', driftfix: 'slew' },
      extraArgs: ['-device', '{"driver":"virtio-rng-pci","id":"rng0"}'],
    },
    files: [
      { path: 'share', kind: 'dir' },
      { path: 'rw,dir', kind: 'dir' },
    ],
  },
  {
    name: 'x86_64-memory-backends',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      memory: { size: '512M', backend: { type: 'memfd', share: true, prealloc: true } },
      shares: [{ type: 'virtiofs', path: 'vfs', tag: 'vfs0' }],
    },
    files: [{ path: 'vfs', kind: 'dir' }],
  },
  {
    name: 'x86_64-file-backend',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      memory: { size: '256M', backend: { type: 'file', path: 'ramdir', share: true } },
    },
    files: [{ path: 'ramdir', kind: 'dir' }],
  },
  {
    name: 'x86_64-secure-boot',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      firmware: { type: 'uefi', secureBoot: true },
      incoming: 'defer',
    },
  },
  {
    name: 'x86_64-snapshot-nbd',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      qmp: { tcp: '127.0.0.1:4444' },
      disks: [
        { path: 'base.qcow2', snapshot: true },
        { uri: 'nbd+unix:///export?socket=nbd.sock', interface: 'virtio-blk', readonly: true },
        { uri: 'nbd://127.0.0.1:10809/other', format: 'qcow2', snapshot: true },
      ],
    },
    accept: false,
    acceptNote:
      'needs NBD servers at fixed addresses; covered by test/interop/qemu-disks.test.ts with vmforge-nbd',
  },
  {
    name: 'x86_64-tap-vnc',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      network: [{ type: 'tap', ifname: 'vmftap0', mac: '52:54:00:ab:cd:ef' }],
      display: { type: 'vnc', vnc: '127.0.0.1:77' },
    },
    needsRoot: true,
  },
  {
    name: 'x86_64-tap-scripts',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      network: [{ type: 'tap', script: 'ifup.sh', downscript: 'ifdown.sh' }],
    },
    accept: false,
    acceptNote: 'runs host network scripts',
  },
  {
    name: 'aarch64-display',
    spec: { arch: 'aarch64', accel: 'tcg', display: { type: 'vnc', vnc: '127.0.0.1:78' } },
  },
  {
    name: 'x86_64-hugepages',
    spec: {
      arch: 'x86_64',
      accel: 'tcg',
      memory: {
        size: '1G',
        hugepages: { pageSize: '2M', backend: 'file', prealloc: true },
        numa: [{ cpus: 0, memory: '512M', hostNodes: [0], policy: 'bind' }, { memory: '512M' }],
      },
      smp: 2,
    },
    accept: false,
    acceptNote:
      'needs huge pages reserved and mounted: test/interop/qemu-hugepages.test.ts does that',
  },
];
