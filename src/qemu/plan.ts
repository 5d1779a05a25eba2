// Model → LaunchPlan: everything the host must decide or prepare before QEMU can be given an
// argv — the binary, the accelerator, a run directory (QMP socket, serial log, vars copy,
// overlays), firmware files, disk formats and overlays, memory backend objects. Side effects go
// through the providers; with `dryRun` nothing is written.

import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyFile, stat } from 'node:fs/promises';
import { InvalidArgumentError, fromSystemError, withContext } from '../core/index.js';
import { resolveAccel, type AccelDecision, type KvmProbe } from './accel.js';
import { defaultProviders } from './adapters.js';
import type { DiskModel, MemoryBackendModel, VmModel } from './model.js';
import type {
  HugepageBackendRequest,
  LaunchProviders,
  PreparedFirmware,
  QomObject,
} from './providers.js';

export interface PlanOptions {
  providers?: Partial<LaunchProviders>;
  /** Run directory for sockets, logs and per-VM files; default: a new temporary directory. */
  runDir?: string;
  /** Decide and describe only: no directory, no copies, no overlays. */
  dryRun?: boolean;
  /** Use this accelerator decision instead of probing (tests, or a caller that knows). */
  accel?: AccelDecision;
  kvmProbe?: KvmProbe;
  kvmDevice?: string;
  signal?: AbortSignal;
}

export interface PlannedDisk {
  model: DiskModel;
  /** Format of the image itself (probed when the spec left it out). */
  format: string;
  /** Throwaway qcow2 overlay over the image, for `snapshot: true`. */
  overlay: string | undefined;
}

export interface MemoryPlan {
  /** Backend for all guest RAM (`-machine memory-backend=`), when there are no NUMA nodes. */
  machineBackend: QomObject | undefined;
  /** Per NUMA node (undefined for memoryless nodes). */
  nodeBackends: (QomObject | undefined)[];
  /** Per DIMM, same order as model.memory.dimms. */
  dimmBackends: QomObject[];
}

export interface LaunchPlan {
  model: VmModel;
  binary: string;
  accel: 'kvm' | 'tcg';
  accelNote: string | undefined;
  /** Resolved `-cpu` model (auto → host or max). */
  cpuModel: string;
  runDir: string;
  /** True when the plan created runDir (and so may delete it). */
  runDirOwned: boolean;
  /** The user's QMP monitor (spec `qmp`), free for them while vmforge runs. */
  qmp: { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };
  /** vmforge's own QMP monitor (a monitor serves one client at a time). */
  controlSocket: string;
  serialLog: string;
  firmware: PreparedFirmware | undefined;
  disks: PlannedDisk[];
  memory: MemoryPlan;
  /** vhost-user socket per share (undefined for 9p shares). */
  virtiofsSockets: (string | undefined)[];
}

export function emulatorFor(model: VmModel): string {
  return model.emulator ?? `qemu-system-${model.arch}`;
}

export async function planLaunch(model: VmModel, options: PlanOptions = {}): Promise<LaunchPlan> {
  const providers = { ...defaultProviders(), ...options.providers };
  const binary = emulatorFor(model);
  const dryRun = options.dryRun ?? false;
  let runDir = options.runDir;
  let runDirOwned = false;
  if (runDir === undefined) {
    const prefix = join(tmpdir(), `vmforge-${model.name ?? 'vm'}-`);
    if (dryRun) runDir = `${prefix}XXXXXX`;
    else {
      runDir = await mkdtemp(prefix);
      runDirOwned = true;
    }
  }
  if (!dryRun && !runDirOwned) await mkdir(runDir, { recursive: true });
  const qmpPath = join(runDir, 'qmp.sock');
  const qmp =
    model.qmp.kind === 'tcp'
      ? model.qmp
      : { kind: 'unix' as const, path: model.qmp.path ?? qmpPath };
  const controlSocket = join(runDir, 'control.qmp');
  for (const path of [qmp.kind === 'unix' ? qmp.path : '', controlSocket]) {
    if (Buffer.byteLength(path) > 107) {
      throw new InvalidArgumentError(
        `QMP socket path is longer than 107 bytes (sun_path): ${path}`,
      );
    }
  }

  const decision =
    options.accel ??
    (await resolveAccel(model.accel, model.arch, model.machine, {
      binary,
      ...(options.kvmDevice === undefined ? {} : { kvmDevice: options.kvmDevice }),
      ...(options.kvmProbe === undefined ? {} : { probe: options.kvmProbe }),
    }));
  let cpuModel = model.cpu.model;
  if (cpuModel === 'auto') cpuModel = decision.accel === 'kvm' ? 'host' : 'max';
  if (cpuModel === 'host' && decision.accel !== 'kvm') {
    throw new InvalidArgumentError(
      `spec field \`cpu\`: model host needs KVM, but ${decision.note ?? 'accel is tcg'}; use cpu max`,
      { code: 'VMF_INVALID_SPEC' },
    );
  }

  let firmware: PreparedFirmware | undefined;
  if (model.firmware.type === 'uefi') {
    const fw = model.firmware;
    const request = {
      arch: model.arch,
      machine: model.machine.type,
      secureBoot: fw.secureBoot,
      code: fw.code,
      varsTemplate: fw.varsTemplate,
      outDir: runDir,
      ...(options.signal ? { signal: options.signal } : {}),
    };
    if (fw.vars !== undefined && (await exists(fw.vars))) {
      // A persistent vars file that exists already is this VM's own: use it as it is.
      const located = await providers.firmware.locate(request);
      firmware = { ...located, vars: fw.vars };
    } else if (dryRun) {
      firmware = await providers.firmware.locate(request);
      if (fw.vars !== undefined) firmware = { ...firmware, vars: fw.vars };
    } else {
      firmware = await providers.firmware.prepare(request);
      if (fw.vars !== undefined) {
        try {
          await copyFile(firmware.vars, fw.vars);
        } catch (err) {
          throw fromSystemError(err, `Could not create the vars file '${fw.vars}'`);
        }
        firmware = { ...firmware, vars: fw.vars };
      }
    }
  }

  const disks: PlannedDisk[] = [];
  const planDisk = async (d: DiskModel): Promise<PlannedDisk> => {
    let format = d.format;
    if (format === undefined) {
      // NBD exports carry raw guest data unless told otherwise (qemu-nbd serves the decoded image).
      format = d.source.kind === 'file' ? await providers.images.probeFormat(d.source.path) : 'raw';
    }
    let overlay: string | undefined;
    if (d.snapshot) {
      overlay = join(runDir, `${d.id}-overlay.qcow2`);
      if (!dryRun) {
        await providers.images.createOverlay({
          backing:
            d.source.kind === 'file'
              ? { kind: 'file', path: d.source.path }
              : { kind: 'nbd', uri: d.source.uri },
          backingFormat: format,
          path: overlay,
          ...(options.signal ? { signal: options.signal } : {}),
        });
      }
    }
    return { model: d, format, overlay };
  };
  for (const [i, d] of model.disks.entries()) {
    try {
      disks.push(await planDisk(d));
    } catch (err) {
      throw withContext(err, `disks[${i}]`);
    }
  }

  const memory = await planMemory(model, providers, dryRun);
  const virtiofsSockets = model.shares.map((s) =>
    s.kind === 'virtiofs' ? join(runDir, `${s.id}.vhost.sock`) : undefined,
  );

  return {
    model,
    binary,
    accel: decision.accel,
    accelNote: decision.note,
    cpuModel,
    runDir,
    runDirOwned,
    qmp,
    controlSocket,
    serialLog: model.serial.log ?? join(runDir, 'serial.log'),
    firmware,
    disks,
    memory,
    virtiofsSockets,
  };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function planMemory(
  model: VmModel,
  providers: LaunchProviders,
  dryRun: boolean,
): Promise<MemoryPlan> {
  const mem = model.memory;
  const backend = mem.backend;
  // Regions of guest RAM that need an explicit backend object: [id, size, hostNodes, policy].
  type Region = {
    id: string;
    size: number;
    hostNodes?: number[] | undefined;
    policy?: string | undefined;
  };
  const ram: (Region | undefined)[] = [];
  if (mem.numa.length > 0) {
    for (const n of mem.numa) {
      ram.push(
        n.memory === 0
          ? undefined
          : { id: `ram-node${n.id}`, size: n.memory, hostNodes: n.hostNodes, policy: n.policy },
      );
    }
  } else if (mem.backendExplicit || backend.kind !== 'ram') {
    ram.push({ id: 'ram0', size: mem.size });
  }
  // DIMMs follow the RAM backend for memfd and huge pages; nvdimms are files; others plain RAM.
  const dimmRegions: Region[] = mem.dimms.map((d) => ({ id: `mem-${d.id}`, size: d.size }));
  const followsRam = (i: number): boolean =>
    mem.dimms[i]!.type !== 'nvdimm' && (backend.kind === 'hugepages' || backend.kind === 'memfd');

  let objects: Map<string, QomObject>;
  const wanted: Region[] = [
    ...ram.filter((r): r is Region => r !== undefined),
    ...dimmRegions.filter((_, i) => followsRam(i)),
  ];
  if (backend.kind === 'hugepages') {
    const planned = await providers.hugepages.planBackends(
      wanted.map((r) => ({
        id: r.id,
        size: r.size,
        pageSize: backend.pageSize,
        backend: backend.backend,
        prealloc: backend.prealloc,
        share: backend.share,
        mount: backend.mount,
        hostNodes: r.hostNodes,
        policy: r.policy as HugepageBackendRequest['policy'],
        dryRun,
      })),
    );
    objects = new Map(planned.map((o) => [o.id, o]));
  } else {
    objects = new Map(
      wanted.map((r) => [r.id, plainBackend(backend, r.id, r.size, r.hostNodes, r.policy)]),
    );
  }
  const get = (id: string): QomObject => {
    const o = objects.get(id);
    if (!o) throw new Error(`memory planner returned no backend '${id}'`);
    return o;
  };
  return {
    machineBackend: mem.numa.length === 0 && ram[0] ? get('ram0') : undefined,
    nodeBackends: mem.numa.length > 0 ? ram.map((r) => (r ? get(r.id) : undefined)) : [],
    dimmBackends: mem.dimms.map((d, i) =>
      d.type === 'nvdimm'
        ? {
            'qom-type': 'memory-backend-file',
            id: `mem-${d.id}`,
            size: d.size,
            'mem-path': d.path,
            share: true,
          }
        : followsRam(i)
          ? get(`mem-${d.id}`)
          : { 'qom-type': 'memory-backend-ram', id: `mem-${d.id}`, size: d.size },
    ),
  };
}

function plainBackend(
  b: Exclude<MemoryBackendModel, { kind: 'hugepages' }>,
  id: string,
  size: number,
  hostNodes: number[] | undefined,
  policy: string | undefined,
): QomObject {
  const type = {
    ram: 'memory-backend-ram',
    memfd: 'memory-backend-memfd',
    file: 'memory-backend-file',
  }[b.kind];
  const obj: QomObject = { 'qom-type': type, id, size };
  if (b.kind === 'file') obj['mem-path'] = b.path;
  if (b.share) obj['share'] = true;
  if (b.prealloc) obj['prealloc'] = true;
  if (hostNodes) obj['host-nodes'] = hostNodes;
  if (policy) obj['policy'] = policy;
  return obj;
}
