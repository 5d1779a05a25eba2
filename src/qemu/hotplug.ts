// CPU and memory hotplug over QMP. CPUs: pick a free slot from query-hotpluggable-cpus and
// device_add it with that slot's props (docs/system/cpu-hotplug.rst). Memory: object-add a
// backend, then device_add pc-dimm on it (docs/memory-hotplug.txt); unplug needs the guest's
// cooperation and completes with DEVICE_DELETED.

import { InvalidArgumentError } from '../core/index.js';
import type { QomObject } from './providers.js';
import type { QmpClient } from './qmp/client.js';

export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: Record<string, number>;
  'qom-path'?: string;
}

export interface CpuSlotRequest {
  socket?: number;
  die?: number;
  cluster?: number;
  core?: number;
  thread?: number;
  /** Device id; default `cpu-hp-<socket>-<die>-<cluster>-<core>-<thread>`. */
  id?: string;
}

const PROP_OF: Record<keyof Omit<CpuSlotRequest, 'id'>, string> = {
  socket: 'socket-id',
  die: 'die-id',
  cluster: 'cluster-id',
  core: 'core-id',
  thread: 'thread-id',
};

/** Plug one CPU into the first free slot matching `request`; returns its id and slot props. */
export async function hotplugCpu(
  qmp: QmpClient,
  request: CpuSlotRequest = {},
): Promise<{ id: string; driver: string; props: Record<string, number> }> {
  const slots = await qmp.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
  const wanted = Object.entries(PROP_OF).filter(
    ([k]) => request[k as keyof typeof PROP_OF] !== undefined,
  );
  const free = slots.filter((s) => s['qom-path'] === undefined);
  const slot = free.find((s) =>
    wanted.every(([k, prop]) => s.props[prop] === request[k as keyof typeof PROP_OF]),
  );
  if (!slot) {
    const what = wanted.map(([k]) => `${k} ${request[k as keyof typeof PROP_OF]}`).join(', ');
    throw new InvalidArgumentError(
      free.length === 0
        ? `no free CPU slot: all ${slots.length} possible CPUs are present (raise smp.maxcpus)`
        : `no free CPU slot matches ${what}; free slots: ${free.map((s) => JSON.stringify(s.props)).join(' ')}`,
      { code: 'VMF_NO_CPU_SLOT' },
    );
  }
  const p = slot.props;
  const id =
    request.id ??
    `cpu-hp-${[p['socket-id'], p['die-id'], p['cluster-id'], p['core-id'], p['thread-id']].map((v) => v ?? 0).join('-')}`;
  await qmp.execute('device_add', { driver: slot.type, id, ...slot.props });
  return { id, driver: slot.type, props: slot.props };
}

/** Ask the guest to release a hotplugged device and wait for DEVICE_DELETED. */
export async function unplugDevice(qmp: QmpClient, id: string, timeoutMs = 30_000): Promise<void> {
  const deleted = qmp.waitForEvent((e) => e.event === 'DEVICE_DELETED' && e.data['device'] === id, {
    timeoutMs,
  });
  try {
    await qmp.execute('device_del', { id });
  } catch (err) {
    deleted.catch(() => undefined);
    throw err;
  }
  await deleted;
}

export interface MemoryHotplugRequest {
  size: number;
  /** DIMM device id; the backend is `mem-<id>`. @default `dimm-hp<n>` */
  id?: string;
  /** NUMA node to attach the DIMM to. */
  node?: number;
  /** Backend object to use instead of a plain memory-backend-ram (e.g. from a HugepagePlanner). */
  backend?: QomObject;
}

let hotplugCounter = 0;

/** object-add a memory backend and device_add a pc-dimm on it; undoes the backend on failure. */
export async function hotplugMemory(
  qmp: QmpClient,
  request: MemoryHotplugRequest,
): Promise<{ id: string; memdev: string }> {
  const id = request.id ?? `dimm-hp${hotplugCounter++}`;
  const backend: QomObject = request.backend ?? {
    'qom-type': 'memory-backend-ram',
    id: `mem-${id}`,
    size: request.size,
  };
  await qmp.execute('object-add', backend);
  try {
    const dev: Record<string, unknown> = { driver: 'pc-dimm', id, memdev: backend.id };
    if (request.node !== undefined) dev['node'] = request.node;
    await qmp.execute('device_add', dev);
  } catch (err) {
    await qmp.execute('object-del', { id: backend.id }).catch(() => undefined);
    throw err;
  }
  return { id, memdev: backend.id };
}

/** Unplug a DIMM (guest must cooperate) and delete its backend. */
export async function unplugMemory(
  qmp: QmpClient,
  id: string,
  memdev = `mem-${id}`,
  timeoutMs = 30_000,
): Promise<void> {
  await unplugDevice(qmp, id, timeoutMs);
  await qmp.execute('object-del', { id: memdev });
}
