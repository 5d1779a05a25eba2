// Spec validation: defaults that boot on a bare machine, and for every invalid spec one clear
// message naming the field, the allowed values, and (for topology and NUMA) the arithmetic.
import { describe, expect, it } from 'vitest';
import { normalizeSpec, SpecError } from '../../src/qemu/index.js';

function errorOf(spec: unknown): SpecError {
  try {
    normalizeSpec(spec);
  } catch (err) {
    expect(err).toBeInstanceOf(SpecError);
    return err as SpecError;
  }
  throw new Error('spec was accepted');
}

describe('defaults', () => {
  it('an empty x86_64 spec is a q35 UEFI guest with 1 CPU and 1 GiB', () => {
    const m = normalizeSpec({ arch: 'x86_64' });
    expect(m.machine).toEqual({ type: 'q35', family: 'q35', props: [], intelIommu: false });
    expect(m.accel).toBe('auto');
    expect(m.cpu).toEqual({ model: 'auto', features: [] });
    expect(m.smp).toMatchObject({
      cpus: 1,
      maxcpus: 1,
      sockets: 1,
      dies: 1,
      clusters: 1,
      cores: 1,
      threads: 1,
    });
    expect(m.memory.size).toBe(1024 ** 3);
    expect(m.firmware.type).toBe('uefi');
    expect(m.networks).toEqual([]);
    expect(m.display).toEqual({ kind: 'none' });
    expect(m.qmp).toEqual({ kind: 'unix', path: undefined });
  });

  it('aarch64 defaults to virt with GICv3', () => {
    const m = normalizeSpec({ arch: 'aarch64' });
    expect(m.machine.props).toEqual([['gic-version', '3']]);
  });

  it('a kernel without firmware means direct boot', () => {
    expect(normalizeSpec({ arch: 'aarch64', kernel: 'Image' }).firmware).toEqual({ type: 'none' });
  });

  it('the topology is completed like QEMU 7.2 (cores preferred) and made explicit', () => {
    expect(normalizeSpec({ arch: 'x86_64', smp: { cpus: 8, sockets: 2 } }).smp).toMatchObject({
      cpus: 8,
      maxcpus: 8,
      sockets: 2,
      dies: 1,
      cores: 4,
      threads: 1,
    });
    expect(normalizeSpec({ arch: 'x86_64', smp: { cpus: 2, maxcpus: 4 } }).smp).toMatchObject({
      cores: 4,
    });
    expect(normalizeSpec({ arch: 'x86_64', smp: 6 }).smp).toMatchObject({
      cpus: 6,
      maxcpus: 6,
      cores: 6,
    });
  });

  it('the first disk boots when no bootindex is given', () => {
    const m = normalizeSpec({ arch: 'x86_64', disks: ['a.qcow2', 'b.raw'] });
    expect(m.disks.map((d) => d.bootindex)).toEqual([1, undefined]);
  });

  it('virtio-fs switches guest RAM to shared memfd', () => {
    const m = normalizeSpec({ arch: 'x86_64', shares: [{ type: 'virtiofs', path: '/srv' }] });
    expect(m.memory.backend).toEqual({ kind: 'memfd', share: true, prealloc: false });
  });

  it('NBD URIs become blockdev server addresses', () => {
    const m = normalizeSpec({
      arch: 'x86_64',
      disks: [
        'nbd://example.org:10810/my%20export',
        'nbd+unix:///e?socket=/run/nbd.sock',
        'nbd://[::1]/',
        'nbd+tcp://127.0.0.1//abs%2Fname',
      ],
    });
    expect(m.disks.map((d) => d.source)).toEqual([
      {
        kind: 'nbd',
        uri: 'nbd://example.org:10810/my%20export',
        server: { type: 'inet', host: 'example.org', port: '10810' },
        export: 'my export',
        tls: false,
      },
      {
        kind: 'nbd',
        uri: 'nbd+unix:///e?socket=/run/nbd.sock',
        server: { type: 'unix', path: '/run/nbd.sock' },
        export: 'e',
        tls: false,
      },
      {
        kind: 'nbd',
        uri: 'nbd://[::1]/',
        server: { type: 'inet', host: '::1', port: '10809' },
        export: undefined,
        tls: false,
      },
      {
        // QEMU's other spelling of nbd://; the export name keeps its own leading '/'.
        kind: 'nbd',
        uri: 'nbd+tcp://127.0.0.1//abs%2Fname',
        server: { type: 'inet', host: '127.0.0.1', port: '10809' },
        export: '/abs/name',
        tls: false,
      },
    ]);
  });
});

// [title, spec, field, message fragment]
const INVALID: [string, Record<string, unknown>, string, string][] = [
  [
    'unknown top-level field',
    { arch: 'x86_64', memroy: '1G' },
    'memroy',
    'unknown field; allowed here: accel, append',
  ],
  [
    'unknown nested field',
    { arch: 'x86_64', memory: { size: '1G', slot: 2 } },
    'memory.slot',
    'allowed here: backend, dimms, hugepages, maxmem, numa, size, slots',
  ],
  [
    'bad arch',
    { arch: 'riscv64' },
    'arch',
    'expected one of aarch64, x86_64; got "riscv64" (string)',
  ],
  [
    'machine of the other arch',
    { arch: 'aarch64', machine: 'q35' },
    'machine',
    'machine type "q35" is not supported for arch aarch64; expected one of virt, virt-X.Y',
  ],
  [
    'virt option on x86',
    { arch: 'x86_64', machine: { gicVersion: 3 } },
    'machine.gicVersion',
    'not a property of the q35 machine (only of: virt)',
  ],
  [
    'smm on virt',
    { arch: 'aarch64', machine: { smm: true } },
    'machine.smm',
    'not a property of the virt machine',
  ],
  [
    'bad gic version',
    { arch: 'aarch64', machine: { gicVersion: 5 } },
    'machine.gicVersion',
    'expected one of 2, 3, 4, host, max; got 5 (number)',
  ],
  ['bad accel', { arch: 'x86_64', accel: 'hvf' }, 'accel', 'expected one of auto, kvm, tcg'],
  [
    'topology product',
    { arch: 'x86_64', smp: { cpus: 4, maxcpus: 4, sockets: 2, cores: 3, threads: 1 } },
    'smp',
    'the CPU topology sockets (2) × dies (1) × cores (3) × threads (1) = 6 CPUs must equal maxcpus (4)',
  ],
  [
    'topology product on virt',
    { arch: 'aarch64', smp: { maxcpus: 8, sockets: 2, clusters: 2, cores: 3, threads: 1 } },
    'smp',
    'sockets (2) × clusters (2) × cores (3) × threads (1) = 12 CPUs must equal maxcpus (8)',
  ],
  [
    'cpus above maxcpus',
    { arch: 'x86_64', smp: { cpus: 8, maxcpus: 4 } },
    'smp',
    'cpus (8) must not exceed maxcpus (4)',
  ],
  [
    'clusters on q35',
    { arch: 'x86_64', smp: { cpus: 4, clusters: 2 } },
    'smp.clusters',
    "clusters are not supported by the q35 machine's CPU topology",
  ],
  [
    'dies on virt',
    { arch: 'aarch64', smp: { cpus: 4, dies: 2 } },
    'smp.dies',
    'dies are not supported by the virt machine',
  ],
  [
    'GICv2 CPU limit',
    { arch: 'aarch64', machine: { gicVersion: 2 }, smp: 16 },
    'smp',
    "maxcpus (16) exceeds the virt machine's limit of 8 with machine.gicVersion 2 (use 3)",
  ],
  [
    'zero cpus',
    { arch: 'x86_64', smp: { cpus: 0 } },
    'smp.cpus',
    'expected an integer between 1 and 4096, got 0 (number)',
  ],
  [
    'coldplug on virt',
    { arch: 'aarch64', smp: { cpus: 1, maxcpus: 2, coldplug: [{ core: 1 }] } },
    'smp.coldplug',
    'the virt machine cannot add CPUs with -device',
  ],
  [
    'coldplug onto a boot CPU',
    { arch: 'x86_64', smp: { cpus: 2, maxcpus: 4, coldplug: [{ core: 1 }] } },
    'smp.coldplug[0]',
    'CPU index 1 is already one of the 2 boot CPUs',
  ],
  [
    'coldplug id out of range',
    { arch: 'x86_64', smp: { cpus: 2, maxcpus: 4, coldplug: [{ socket: 1 }] } },
    'smp.coldplug[0].socket',
    'expected an integer between 0 and 0',
  ],
  [
    'host CPU with TCG',
    { arch: 'x86_64', accel: 'tcg', cpu: 'host' },
    'cpu',
    'cpu model host needs KVM',
  ],
  [
    'bad cpu feature value',
    { arch: 'x86_64', cpu: { model: 'max', features: { sve: 'yes please' } } },
    'cpu.features.sve',
    'expected true, false, an integer or a simple word',
  ],
  [
    'memory too small',
    { arch: 'x86_64', memory: '1M' },
    'memory',
    'expected a size between 16777216 and',
  ],
  [
    'memory not in MiB',
    { arch: 'x86_64', memory: 1073741825 },
    'memory',
    'is not a whole number of MiB',
  ],
  [
    'memory not a size',
    { arch: 'x86_64', memory: 'lots' },
    'memory',
    'expected a size: bytes, or a number with a K, M, G or T suffix',
  ],
  [
    'NUMA sum',
    {
      arch: 'x86_64',
      smp: 2,
      memory: {
        size: '1G',
        numa: [
          { cpus: 0, memory: '512M' },
          { cpus: 1, memory: '256M' },
        ],
      },
    },
    'memory.numa',
    'node memory must add up to memory.size: 512 MiB + 256 MiB = 805306368 bytes (768 MiB), but memory.size is 1073741824 bytes (1 GiB)',
  ],
  [
    'NUMA CPU out of range',
    { arch: 'x86_64', smp: 2, memory: { size: '1G', numa: [{ cpus: '0-2', memory: '1G' }] } },
    'memory.numa[0].cpus',
    'CPU 2 is outside 0-1 (smp.maxcpus is 2)',
  ],
  [
    'NUMA CPU twice',
    {
      arch: 'x86_64',
      smp: 2,
      memory: {
        size: '1G',
        numa: [
          { cpus: '0-1', memory: '512M' },
          { cpus: 1, memory: '512M' },
        ],
      },
    },
    'memory.numa[1].cpus',
    'CPU 1 is already in memory.numa[0]',
  ],
  [
    'NUMA distances incomplete',
    {
      arch: 'x86_64',
      smp: 3,
      memory: {
        size: '768M',
        numa: [
          { cpus: 0, memory: '256M', distances: { 1: 20 } },
          { cpus: 1, memory: '256M' },
          { cpus: 2, memory: '256M' },
        ],
      },
    },
    'memory.numa',
    'node 0 ↔ 2 needs one too',
  ],
  [
    'NUMA policy without host nodes',
    { arch: 'x86_64', memory: { size: '1G', numa: [{ cpus: 0, memory: '1G', policy: 'bind' }] } },
    'memory.numa[0].policy',
    'policy bind needs memory.numa[0].hostNodes',
  ],
  [
    'DIMMs without slots',
    { arch: 'x86_64', memory: { size: '1G', maxmem: '2G', dimms: [{ size: '512M' }] } },
    'memory.maxmem',
    'memory.maxmem above memory.size needs memory.slots',
  ],
  [
    'DIMMs beyond maxmem',
    {
      arch: 'x86_64',
      memory: { size: '1G', slots: 2, maxmem: '1280M', dimms: [{ size: '512M' }] },
    },
    'memory.maxmem',
    'memory.size + DIMMs = 1610612736 bytes (1.5 GiB) needs memory.maxmem of at least that (it is 1342177280 bytes (1.25 GiB))',
  ],
  [
    'slots without maxmem',
    { arch: 'x86_64', memory: { size: '1G', slots: 2 } },
    'memory.slots',
    'memory.slots needs memory.maxmem',
  ],
  [
    'maxmem below size',
    { arch: 'x86_64', memory: { size: '2G', maxmem: '1G' } },
    'memory.maxmem',
    'is smaller than memory.size',
  ],
  [
    'nvdimm without a path',
    {
      arch: 'x86_64',
      memory: { size: '1G', slots: 1, maxmem: '2G', dimms: [{ type: 'nvdimm', size: '128M' }] },
    },
    'memory.dimms[0].path',
    'an nvdimm needs a backing file path',
  ],
  [
    'DIMMs on DTB boot',
    {
      arch: 'aarch64',
      kernel: 'Image',
      memory: { size: '1G', slots: 1, maxmem: '2G', dimms: [{ size: '128M' }] },
    },
    'memory.dimms',
    'need ACPI, i.e. firmware uefi',
  ],
  [
    'huge page size',
    { arch: 'x86_64', memory: { size: '1G', hugepages: { pageSize: '4M' } } },
    'memory.hugepages.pageSize',
    'expected 2M or 1G',
  ],
  [
    'backend and hugepages',
    { arch: 'x86_64', memory: { size: '1G', backend: 'memfd', hugepages: true } },
    'memory.hugepages',
    'exclusive',
  ],
  [
    'virtio-fs on private memory',
    {
      arch: 'x86_64',
      memory: { size: '1G', backend: 'ram' },
      shares: [{ type: 'virtiofs', path: '/srv' }],
    },
    'memory.backend',
    'virtio-fs shares need shared guest memory',
  ],
  [
    'firmware none without kernel',
    { arch: 'aarch64', firmware: 'none' },
    'firmware',
    'firmware none boots a kernel directly: set `kernel`',
  ],
  [
    'BIOS on aarch64',
    { arch: 'aarch64', firmware: 'bios' },
    'firmware',
    'expected one of uefi, none; got "bios"',
  ],
  ['initrd without kernel', { arch: 'x86_64', initrd: 'initrd.img' }, 'initrd', 'needs `kernel`'],
  [
    'secure boot with SMM off',
    { arch: 'x86_64', machine: { smm: false }, firmware: { type: 'uefi', secureBoot: true } },
    'firmware',
    'secureBoot on x86_64 needs machine.smm (it is off)',
  ],
  [
    'disk interface',
    { arch: 'x86_64', disks: [{ path: 'a.img', interface: 'sata' }] },
    'disks[0].interface',
    'expected one of virtio-blk, virtio-scsi, nvme, ide; got "sata" (string)',
  ],
  [
    'disk without path',
    { arch: 'x86_64', disks: [{ format: 'raw' }] },
    'disks[0].path',
    'each disk needs a `path` (or an NBD `uri`)',
  ],
  [
    'read-only IDE disk',
    { arch: 'x86_64', disks: [{ path: 'a.img', interface: 'ide', readonly: true }] },
    'disks[0].readonly',
    'an ide hard disk cannot be read-only',
  ],
  [
    'aio native with page cache',
    { arch: 'x86_64', disks: [{ path: 'a.img', aio: 'native' }] },
    'disks[0].aio',
    'aio native needs cache none or directsync (O_DIRECT), not writeback',
  ],
  [
    'cdrom on virtio-blk',
    { arch: 'x86_64', disks: [{ path: 'a.iso', media: 'cdrom' }] },
    'disks[0].media',
    'a cdrom needs interface ide or virtio-scsi',
  ],
  [
    'duplicate bootindex',
    {
      arch: 'x86_64',
      disks: [
        { path: 'a', bootindex: 1 },
        { path: 'b', bootindex: 1 },
      ],
    },
    'disks[1].bootindex',
    'bootindex 1 is also used by disks[0]',
  ],
  [
    'unknown URI scheme',
    { arch: 'x86_64', disks: ['http://example.org/a.img'] },
    'disks[0]',
    'unsupported URI "http://example.org/a.img"',
  ],
  [
    'nbd+unix without socket',
    { arch: 'x86_64', disks: [{ uri: 'nbd+unix:///export' }] },
    'disks[0].uri',
    "invalid NBD URI 'nbd+unix:///export': missing 'socket' query parameter",
  ],
  [
    'nbd:// without a host',
    { arch: 'x86_64', disks: ['nbd:///export'] },
    'disks[0]',
    "invalid NBD URI 'nbd:///export': missing host",
  ],
  [
    'NBD port out of range',
    { arch: 'x86_64', disks: ['nbd://h:70000/e'] },
    'disks[0]',
    "invalid NBD URI 'nbd://h:70000/e': invalid port '70000'",
  ],
  [
    'NBD over TLS',
    { arch: 'x86_64', disks: [{ uri: 'nbds://h/e?tls-certificates=/pki' }] },
    'disks[0].uri',
    'NBD over TLS (nbds://) is not supported by the launcher yet',
  ],
  [
    'NBD over TLS on a unix socket',
    { arch: 'x86_64', disks: ['nbds+unix:///e?socket=/s'] },
    'disks[0]',
    'NBD over TLS (nbds+unix://) is not supported by the launcher yet',
  ],
  [
    'libnbd TLS parameter on a plain NBD URI',
    { arch: 'x86_64', disks: ['nbd://h/e?tls-hostname=h'] },
    'disks[0]',
    `"nbd://h/e?tls-hostname=h": QEMU takes no query parameter 'tls-hostname' in an NBD URI`,
  ],
  [
    'experimental parameter on a unix NBD URI',
    { arch: 'x86_64', disks: ['nbd+unix:///e?socket=/s&x-foo=1'] },
    'disks[0]',
    "QEMU takes no query parameter 'x-foo' in an NBD URI",
  ],
  [
    'user name in an NBD URI',
    { arch: 'x86_64', disks: ['nbd://alice@h/e'] },
    'disks[0]',
    'QEMU takes no user name in an NBD URI',
  ],
  [
    'O_DIRECT on NBD',
    { arch: 'x86_64', disks: [{ uri: 'nbd://h/e', cache: 'none' }] },
    'disks[0].cache',
    'an NBD disk takes writeback, writethrough or unsafe',
  ],
  [
    'snapshot of a read-only disk',
    { arch: 'x86_64', disks: [{ path: 'a', readonly: true, snapshot: true }] },
    'disks[0].snapshot',
    'a snapshot overlay is writable',
  ],
  [
    'bad hostfwd',
    { arch: 'x86_64', network: [{ type: 'user', hostfwd: ['2222:22'] }] },
    'network[0].hostfwd[0]',
    'expected a forward such as "tcp:127.0.0.1:2222-:22"',
  ],
  [
    'bad MAC',
    { arch: 'x86_64', network: [{ type: 'user', mac: '52:54:00:zz:00:01' }] },
    'network[0].mac',
    'expected a MAC address such as 52:54:00:12:34:56',
  ],
  [
    'multicast MAC',
    { arch: 'x86_64', network: [{ type: 'user', mac: '01:00:5e:00:00:01' }] },
    'network[0].mac',
    'a multicast MAC',
  ],
  [
    'bad network type',
    { arch: 'x86_64', network: [{ type: 'bridge' }] },
    'network[0].type',
    'expected one of user, tap',
  ],
  [
    'duplicate share tag',
    {
      arch: 'x86_64',
      shares: [
        { type: '9p', path: 'a', tag: 't' },
        { type: '9p', path: 'b', tag: 't' },
      ],
    },
    'shares[1].tag',
    'mount tag t is used twice',
  ],
  ['bad uuid', { arch: 'x86_64', uuid: 'not-a-uuid' }, 'uuid', 'expected a UUID'],
  [
    'bad name',
    { arch: 'x86_64', name: 'my vm, please' },
    'name',
    'expected 1-64 letters, digits, _ . -',
  ],
  [
    'bad qmp endpoint',
    { arch: 'x86_64', qmp: 'tcp:localhost' },
    'qmp',
    'expected a TCP endpoint such as "127.0.0.1:4444"',
  ],
  ['bad incoming', { arch: 'x86_64', incoming: 'later' }, 'incoming', 'expected a migration URI'],
  [
    'bad smbios type',
    { arch: 'x86_64', smbios: [{ type: 9, serial: 'x' }] },
    'smbios[0].type',
    'expected one of 0, 1, 2, 3, 4, 11, 17; got 9',
  ],
  ['extraArgs not a list', { arch: 'x86_64', extraArgs: '-s -S' }, 'extraArgs', 'expected a list'],
  ['spec not a mapping', ['arch'] as unknown as Record<string, unknown>, '', 'expected a mapping'],
];

describe('invalid specs', () => {
  for (const [title, spec, field, message] of INVALID) {
    it(title, () => {
      const err = errorOf(spec);
      expect(err.field).toBe(field);
      expect(err.message).toContain(message);
      expect(err.code).toBe('VMF_INVALID_SPEC');
      expect(err.kind).toBe('caller');
      if (field) expect(err.message.startsWith(`spec field \`${field}\`: `)).toBe(true);
    });
  }
});
