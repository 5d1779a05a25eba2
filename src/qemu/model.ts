// The validated VM model: what a spec means once defaults are applied and every cross-field rule
// holds. Internals (argv builder, launcher) accept only this type, never the raw spec.

export type Arch = 'aarch64' | 'x86_64';
export type AccelChoice = 'auto' | 'kvm' | 'tcg';
export type MachineFamily = 'virt' | 'q35' | 'pc';

export interface VmModel {
  name: string | undefined;
  uuid: string | undefined;
  arch: Arch;
  /** Explicit qemu-system binary; undefined = `qemu-system-<arch>` from PATH. */
  emulator: string | undefined;
  machine: MachineModel;
  accel: AccelChoice;
  cpu: CpuModel;
  smp: SmpModel;
  memory: MemoryModel;
  firmware: FirmwareModel;
  kernel: KernelModel | undefined;
  disks: DiskModel[];
  networks: NetworkModel[];
  shares: ShareModel[];
  serial: SerialModel;
  qmp: QmpModel;
  display: DisplayModel;
  incoming: string | undefined;
  smbios: SmbiosModel[];
  rtc: RtcModel | undefined;
  extraArgs: string[];
}

export interface MachineModel {
  /** The QEMU machine type as given (`virt`, `virt-7.2`, `q35`, `pc-q35-7.2`, `pc`). */
  type: MachineFamily | string;
  family: MachineFamily;
  /** `-machine` properties in emission order (QEMU names, values already `on`/`off`/text). */
  props: [string, string][];
  /** x86 q35 only: add an intel-iommu device. */
  intelIommu: boolean;
}

export interface CpuModel {
  /** `auto` = `host` under KVM, `max` under TCG. */
  model: string;
  /** CPU properties in spec order, values as QEMU text (`on`, `off`, `4`). */
  features: [string, string][];
}

export interface SmpModel {
  cpus: number;
  maxcpus: number;
  sockets: number;
  dies: number;
  clusters: number;
  cores: number;
  threads: number;
  /** CPUs added with -device at start, by topology ids. */
  coldplug: CpuSlot[];
}

export interface CpuSlot {
  socket: number;
  die: number;
  cluster: number;
  core: number;
  thread: number;
}

export type MemoryBackendModel =
  | { kind: 'ram'; share: boolean; prealloc: boolean }
  | { kind: 'memfd'; share: boolean; prealloc: boolean }
  | { kind: 'file'; path: string; share: boolean; prealloc: boolean }
  | {
      kind: 'hugepages';
      pageSize: number;
      backend: 'file' | 'memfd';
      prealloc: boolean;
      share: boolean;
      /** hugetlbfs mount to use (file backend); undefined = let the planner choose. */
      mount: string | undefined;
    };

export interface MemoryModel {
  size: number;
  slots: number | undefined;
  maxmem: number | undefined;
  /** How guest RAM is backed. `ram` with no NUMA and no share means QEMU's default RAM. */
  backend: MemoryBackendModel;
  /** True when the spec set the backend, so an explicit backend object is always emitted. */
  backendExplicit: boolean;
  dimms: DimmModel[];
  numa: NumaNodeModel[];
}

export interface DimmModel {
  id: string;
  type: 'pc-dimm' | 'nvdimm';
  size: number;
  node: number | undefined;
  /** nvdimm: the host file backing it. */
  path: string | undefined;
}

export interface NumaNodeModel {
  id: number;
  cpus: number[];
  memory: number;
  hostNodes: number[] | undefined;
  policy: 'default' | 'preferred' | 'bind' | 'interleave' | undefined;
  /** Distances to other nodes by node id (self is 10 and not listed). */
  distances: [number, number][];
}

export type FirmwareModel =
  | {
      type: 'uefi';
      secureBoot: boolean;
      code: string | undefined;
      varsTemplate: string | undefined;
      /** Persistent vars file: reused when it exists, created from the template otherwise. */
      vars: string | undefined;
    }
  | { type: 'bios'; path: string | undefined }
  | { type: 'none' };

export interface KernelModel {
  path: string;
  initrd: string | undefined;
  append: string | undefined;
  dtb: string | undefined;
}

export type DiskSource =
  | { kind: 'file'; path: string }
  | {
      kind: 'nbd';
      uri: string;
      server: { type: 'unix'; path: string } | { type: 'inet'; host: string; port: string };
      export: string | undefined;
      tls: boolean;
    };

export type DiskInterface = 'virtio-blk' | 'virtio-scsi' | 'nvme' | 'ide';
export type CacheMode = 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';

export interface DiskModel {
  id: string;
  source: DiskSource;
  /** Image format; undefined = probe (plain files) or raw (NBD). */
  format: string | undefined;
  interface: DiskInterface;
  media: 'disk' | 'cdrom';
  readonly: boolean;
  snapshot: boolean;
  bootindex: number | undefined;
  cache: CacheMode;
  aio: 'threads' | 'native' | 'io_uring' | undefined;
  discard: boolean;
  serial: string | undefined;
}

export type NetworkModel =
  | {
      id: string;
      kind: 'user';
      hostfwd: string[];
      model: string;
      mac: string | undefined;
    }
  | {
      id: string;
      kind: 'tap';
      ifname: string | undefined;
      script: string | undefined;
      downscript: string | undefined;
      model: string;
      mac: string | undefined;
    };

export type ShareModel =
  | {
      id: string;
      kind: '9p';
      path: string;
      tag: string;
      readonly: boolean;
      securityModel: 'none' | 'mapped-xattr' | 'mapped-file' | 'passthrough';
    }
  | {
      id: string;
      kind: 'virtiofs';
      path: string;
      tag: string;
      /** virtiofsd binary; undefined = look in the usual places. */
      virtiofsd: string | undefined;
    };

export interface SerialModel {
  /** Serial log file; undefined = a file in the VM's run directory. */
  log: string | undefined;
  /** Also connect the serial console to vmforge's stdio. */
  console: boolean;
}

export type QmpModel =
  { kind: 'unix'; path: string | undefined } | { kind: 'tcp'; host: string; port: number };

export type DisplayModel =
  { kind: 'none' } | { kind: 'gtk' | 'sdl' } | { kind: 'vnc'; vnc: string };

export interface SmbiosModel {
  type: number;
  fields: [string, string][];
}

export interface RtcModel {
  base: string | undefined;
  clock: 'host' | 'rt' | 'vm' | undefined;
  driftfix: 'none' | 'slew' | undefined;
}
