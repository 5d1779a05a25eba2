// The launcher's seams to the rest of vmforge. Firmware (src/edk2), huge pages (src/hugetlbfs)
// and disk images (src/qcow2 + src/block/open.ts) come in through these small interfaces so the
// launcher can be tested alone and each library can evolve behind its adapter.

import type { Arch } from './model.js';

/** A QEMU object as `-object` / `object-add` take it in JSON form. */
export interface QomObject {
  'qom-type': string;
  id: string;
  [property: string]: unknown;
}

export interface FirmwareRequest {
  arch: Arch;
  /** Machine type as the spec gave it (`virt`, `q35`, `pc-q35-7.2`). */
  machine: string;
  secureBoot: boolean;
  /** Explicit code image; undefined = discover. */
  code: string | undefined;
  /** Explicit vars template; undefined = the one that goes with the code image. */
  varsTemplate: string | undefined;
  /** Per-VM directory for the copies. */
  outDir: string;
  signal?: AbortSignal;
}

export interface PreparedFirmware {
  /** Code image to map read-only as pflash0. */
  code: string;
  /** This VM's own variable store (pflash1), never the shared template. */
  vars: string;
  /** Format of both images ('raw' or 'qcow2'). */
  format: 'raw' | 'qcow2';
  /** `-machine` properties the firmware needs (firmware.json requires-smm → smm=on). */
  machineProperties?: [string, string][];
  /** `-global` values it needs (e.g. driver=cfi.pflash01,property=secure,value=on). */
  globals?: string[];
}

export interface FirmwareProvider {
  /** Per-VM firmware: code + a fresh vars copy in `outDir` (64 MiB pflash on aarch64). */
  prepare(request: FirmwareRequest): Promise<PreparedFirmware>;
  /** Where prepare() would put things, without writing anything (for --dry-run). */
  locate(request: FirmwareRequest): Promise<PreparedFirmware>;
}

export interface HugepageBackendRequest {
  /** Object id QEMU will know the backend by. */
  id: string;
  size: number;
  pageSize: number;
  backend: 'file' | 'memfd';
  prealloc: boolean;
  share: boolean;
  /** hugetlbfs mount to use; undefined = the planner's choice for this page size. */
  mount: string | undefined;
  hostNodes: number[] | undefined;
  policy: 'default' | 'preferred' | 'bind' | 'interleave' | undefined;
  /** Only check and describe; reserve and mount nothing (for --dry-run). */
  dryRun: boolean;
}

export interface HugepagePlanner {
  /**
   * The memory-backend-file/-memfd objects for all of a guest's huge-page backed RAM regions
   * (whole RAM, or each NUMA node and DIMM), in request order. Planned together so the pool is
   * checked against the guest's total, and per host node.
   */
  planBackends(requests: HugepageBackendRequest[]): Promise<QomObject[]>;
}

export type ImageLocation = { kind: 'file'; path: string } | { kind: 'nbd'; uri: string };

export interface OverlayRequest {
  backing: ImageLocation;
  backingFormat: string;
  /** Where to create the throwaway overlay. */
  path: string;
  signal?: AbortSignal;
}

export interface DiskImages {
  /** The format of a plain image file, by content (never by name). */
  probeFormat(path: string): Promise<string>;
  /** Create a qcow2 overlay at `request.path` over `backing`; the original is never written. */
  createOverlay(request: OverlayRequest): Promise<void>;
}

/** Everything the launcher needs from the host and the other libraries. */
export interface LaunchProviders {
  firmware: FirmwareProvider;
  hugepages: HugepagePlanner;
  images: DiskImages;
}
