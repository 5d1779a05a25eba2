// src/hugetlbfs: huge page pools (sysfs/procfs, per NUMA node), reservation, hugetlbfs mounts,
// and QEMU memory-backend arguments. Every function takes an injectable HugetlbHost.
export {
  localHost,
  recordingHost,
  execRunner,
  actionToShell,
  shellQuote,
  type HugetlbHost,
  type HostAction,
  type LocalHostOptions,
  type Runner,
  type RunOutcome,
  type FsStats,
} from './host.js';
export {
  readHugepageStatus,
  requirePool,
  type HugepageStatus,
  type PoolStatus,
  type NodePool,
  type HostOptions,
} from './status.js';
export { reserveHugepages, type ReserveOptions, type ReserveResult } from './reserve.js';
export {
  mountHugetlbfs,
  umountHugetlbfs,
  findHugetlbfsMount,
  type MountSize,
  type MountHugetlbfsOptions,
  type MountHugetlbfsResult,
  type UmountHugetlbfsOptions,
  type UmountHugetlbfsResult,
} from './mount.js';
export { findMountUsers, type MountUser } from './mount-users.js';
export {
  planHugepageBackend,
  type PlanOptions,
  type HugepagePlan,
  type BackendObject,
  type NumaPlacement,
  type PoolCheck,
} from './plan.js';
export { resolveAccountId } from './accounts.js';
export { parsePageSize, compactSize, sizeDirName } from './paths.js';
export type { HugetlbfsMount, MeminfoHugepages } from './procfs.js';
