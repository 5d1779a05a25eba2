// The `vmforge` subprograms, loaded on first use so that `vmforge-img` and `vmforge img` do not
// pay for firmware, launcher or NBD code at start-up. One entry per feature.
import type { CliIO } from './io.js';
import './nbd/uris.js';

export type Subprogram = (argv: string[], io: CliIO) => Promise<number>;

export interface LazySubprogram {
  describe: string;
  load: () => Promise<Subprogram>;
}

export const subprograms: Record<string, LazySubprogram> = {
  nbd: {
    describe: 'NBD server, qemu-nbd compatible (also: vmforge-nbd)',
    load: async () => (await import('./nbd/index.js')).runNbd,
  },
  io: {
    describe: 'read and write image data, qemu-io style (-c "write -P 0xab 0 1M")',
    load: async () => (await import('./io-cmd/index.js')).runIo,
  },
  firmware: {
    describe: 'UEFI firmware: list, find, fetch, prepare, build',
    load: async () => (await import('./firmware/index.js')).runFirmware,
  },
  hugepages: {
    describe: 'huge page pools, hugetlbfs mounts, QEMU memory backends',
    load: async () => (await import('./hugepages/index.js')).runHugepages,
  },
  run: {
    describe: 'boot a VM from a YAML/JSON spec (QEMU launcher)',
    load: async () => (await import('./run/index.js')).runRun,
  },
  qmp: {
    describe: 'send one QMP command to a running VM',
    load: async () => (await import('./run/index.js')).runQmp,
  },
  demo: {
    describe: 'build a disk, export it over NBD, boot it under UEFI, show the marker',
    load: async () => (await import('./run/index.js')).runDemoCli,
  },
};
