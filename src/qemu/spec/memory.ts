// `memory`: size, hotplug slots and maxmem, backing (RAM, memfd, file, huge pages), cold-plugged
// pc-dimm / nvdimm, NUMA nodes. Rules from qemu-options.hx (-m, -numa) and hw/core/numa.c: node
// memory sums to -m, `memdev=` only (no legacy `mem=`), maxmem ≥ size + DIMMs, slots for DIMMs.

import { formatSize } from '../../core/index.js';
import type {
  DimmModel,
  MemoryBackendModel,
  MemoryModel,
  NumaNodeModel,
  SmpModel,
} from '../model.js';
import type { Field, ObjectReader } from './reader.js';

const MiB = 1024 * 1024;
const DEFAULT_MEMORY = 1024 * MiB;
const POLICIES = ['default', 'preferred', 'bind', 'interleave'] as const;

const sz = (n: number): string => `${n} bytes (${formatSize(n)})`;

/** `memory`: a size, or `{size, slots, maxmem, backend, hugepages, dimms, numa}`. */
export function readMemory(spec: ObjectReader, smp: SmpModel): MemoryModel {
  const f = spec.field('memory');
  const mem: MemoryModel = {
    size: DEFAULT_MEMORY,
    slots: undefined,
    maxmem: undefined,
    backend: { kind: 'ram', share: false, prealloc: false },
    backendExplicit: false,
    dimms: [],
    numa: [],
  };
  if (!f.present) return mem;
  if (!f.isObject()) {
    mem.size = readRamSize(f);
    return mem;
  }
  const o = f.object();
  const size = o.opt('size');
  if (size) mem.size = readRamSize(size);
  const slots = o.opt('slots');
  if (slots) mem.slots = slots.int({ min: 0, max: 256 });
  const maxmem = o.opt('maxmem');
  if (maxmem) {
    mem.maxmem = maxmem.size({ min: MiB });
    // "maxmem must be aligned to the page size" (qemu-options.hx -m); 2 MiB covers huge pages.
    if (mem.maxmem % (2 * MiB) !== 0) maxmem.fail('must be a multiple of 2 MiB');
    if (mem.maxmem < mem.size) {
      maxmem.fail(`maxmem ${sz(mem.maxmem)} is smaller than memory.size ${sz(mem.size)}`);
    }
  }
  // hw/core/machine.c machine_set_mem: slots need a maxmem above the initial size.
  if (mem.slots !== undefined && mem.maxmem === undefined) {
    o.field('slots').fail('memory.slots needs memory.maxmem (the hotplug ceiling)');
  }
  if (mem.maxmem !== undefined && mem.maxmem > mem.size && !mem.slots) {
    o.field('maxmem').fail('memory.maxmem above memory.size needs memory.slots (at least 1)');
  }
  if (mem.slots && mem.maxmem === mem.size) {
    o.field('maxmem').fail(
      `memory.slots are set, so maxmem must exceed memory.size ${sz(mem.size)}`,
    );
  }
  const backend = o.opt('backend');
  const huge = o.opt('hugepages');
  if (backend && huge) huge.fail('memory.backend and memory.hugepages are exclusive; use one');
  if (backend) {
    mem.backend = readBackend(backend);
    mem.backendExplicit = true;
  }
  if (huge) {
    mem.backend = readHugepages(huge);
    mem.backendExplicit = true;
  }
  const numa = o.opt('numa');
  if (numa) mem.numa = readNuma(numa, mem.size, smp);
  const dimms = o.opt('dimms');
  if (dimms) mem.dimms = readDimms(dimms, mem, o);
  o.done();
  return mem;
}

function readRamSize(f: Field): number {
  const n = f.size({ min: 16 * MiB });
  if (n % MiB !== 0) f.fail(`${sz(n)} is not a whole number of MiB`);
  return n;
}

function readBackend(f: Field): MemoryBackendModel {
  if (!f.isObject()) {
    const kind = f.oneOf(['ram', 'memfd'] as const);
    return { kind, share: false, prealloc: false };
  }
  const o = f.object();
  const kind = o.field('type').oneOf(['ram', 'memfd', 'file'] as const);
  const share = o.opt('share')?.bool() ?? false;
  const prealloc = o.opt('prealloc')?.bool() ?? false;
  let backend: MemoryBackendModel;
  if (kind === 'file') {
    backend = { kind, path: o.field('path').nonEmptyString(), share, prealloc };
  } else {
    backend = { kind, share, prealloc };
  }
  o.done();
  return backend;
}

function readHugepages(f: Field): MemoryBackendModel {
  const defaults = {
    kind: 'hugepages' as const,
    pageSize: 2 * MiB,
    backend: 'file' as const,
    prealloc: true,
    share: false,
    mount: undefined,
  };
  if (f.value === true) return defaults;
  const o = f.object();
  const ps = o.opt('pageSize');
  const pageSize = ps ? ps.size() : defaults.pageSize;
  if (ps && pageSize !== 2 * MiB && pageSize !== 1024 * MiB) {
    ps.fail('expected 2M or 1G');
  }
  const h: MemoryBackendModel = {
    ...defaults,
    pageSize,
    backend: o.opt('backend')?.oneOf(['file', 'memfd'] as const) ?? 'file',
    prealloc: o.opt('prealloc')?.bool() ?? true,
    share: o.opt('share')?.bool() ?? false,
    mount: o.opt('mount')?.nonEmptyString(),
  };
  if (h.mount !== undefined && h.backend === 'memfd') {
    o.field('mount').fail('a mount is only used by the file backend, not memfd');
  }
  o.done();
  return h;
}

/** "0-3,6" or [0, 1, 2] → sorted CPU indexes. */
function readCpuList(f: Field, maxcpus: number): number[] {
  const out = new Set<number>();
  const add = (n: number): void => {
    if (!Number.isInteger(n) || n < 0 || n >= maxcpus) {
      f.fail(`CPU ${n} is outside 0-${maxcpus - 1} (smp.maxcpus is ${maxcpus})`);
    }
    out.add(n);
  };
  if (typeof f.value === 'number') add(f.value);
  else if (Array.isArray(f.value)) {
    for (const item of f.array()) add(item.int({ min: 0, max: maxcpus - 1 }));
  } else {
    const text = f.string();
    for (const part of text.split(',')) {
      const m = /^\s*(\d+)(?:\s*-\s*(\d+))?\s*$/.exec(part);
      if (!m) f.expected('CPU indexes such as "0-3,6" or a list of numbers');
      const lo = Number(m[1]);
      const hi = m[2] === undefined ? lo : Number(m[2]);
      if (hi < lo) f.fail(`range ${part.trim()} runs backwards`);
      for (let i = lo; i <= hi; i++) add(i);
    }
  }
  return [...out].sort((a, b) => a - b);
}

function readNuma(f: Field, total: number, smp: SmpModel): NumaNodeModel[] {
  const nodes: NumaNodeModel[] = [];
  const owner = new Map<number, number>();
  const items = f.array();
  if (items.length === 0) f.fail('list at least one node, or omit memory.numa');
  for (const [i, item] of items.entries()) {
    const o = item.object();
    const memory = o.field('memory').size({ min: 0 });
    if (memory % MiB !== 0) o.field('memory').fail(`${sz(memory)} is not a whole number of MiB`);
    const cpusField = o.opt('cpus');
    const cpus = cpusField ? readCpuList(cpusField, smp.maxcpus) : [];
    for (const c of cpus) {
      const prev = owner.get(c);
      if (prev !== undefined) cpusField!.fail(`CPU ${c} is already in memory.numa[${prev}]`);
      owner.set(c, i);
    }
    const hn = o.opt('hostNodes');
    const hostNodes = hn
      ? (Array.isArray(hn.value) ? hn.array() : [hn]).map((x) => x.int({ max: 1023 }))
      : undefined;
    const policy = o.opt('policy')?.oneOf(POLICIES);
    if (policy && policy !== 'default' && !hostNodes) {
      o.field('policy').fail(`policy ${policy} needs memory.numa[${i}].hostNodes`);
    }
    const distances: [number, number][] = [];
    const d = o.opt('distances');
    if (d) {
      const dob = d.object();
      for (const key of dob.keys()) {
        const v = dob.field(key);
        const dst = Number(key);
        if (!/^\d+$/.test(key) || dst >= items.length) {
          v.fail(`not a node id; nodes are 0-${items.length - 1}`);
        }
        if (dst === i) v.fail('the distance to itself is always 10; leave it out');
        distances.push([dst, v.int({ min: 11, max: 255 })]);
      }
      dob.done();
    }
    o.done();
    if (memory === 0 && hostNodes)
      o.field('hostNodes').fail('a memoryless node has no memory to bind');
    nodes.push({ id: i, cpus, memory, hostNodes, policy, distances });
  }
  const sum = nodes.reduce((s, n) => s + n.memory, 0);
  if (sum !== total) {
    const terms = nodes.map((n) => formatSize(n.memory)).join(' + ');
    f.fail(
      `node memory must add up to memory.size: ${terms} = ${sz(sum)}, but memory.size is ${sz(total)}`,
    );
  }
  // QEMU needs all pairs once any distance is given (hw/core/numa.c validate_numa_distance);
  // a missing reverse pair is taken as symmetric, so require one direction of each pair.
  if (nodes.some((n) => n.distances.length > 0)) {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a.id >= b.id) continue;
        const ab = a.distances.some(([dst]) => dst === b.id);
        const ba = b.distances.some(([dst]) => dst === a.id);
        if (!ab && !ba) {
          f.fail(`distances are given for some nodes, so node ${a.id} ↔ ${b.id} needs one too`);
        }
      }
    }
  }
  return nodes;
}

function readDimms(f: Field, mem: MemoryModel, parent: ObjectReader): DimmModel[] {
  const dimms: DimmModel[] = [];
  for (const [i, item] of f.array().entries()) {
    const o = item.object();
    const type = o.opt('type')?.oneOf(['pc-dimm', 'nvdimm'] as const) ?? 'pc-dimm';
    const sizeField = o.field('size');
    const size = sizeField.size({ min: 2 * MiB });
    // DIMMs are mapped at page-aligned addresses; QEMU refuses sizes not multiple of the page
    // size of their backend ("backend memory size must be multiple of 0x200000" on huge pages).
    if (size % (2 * MiB) !== 0) sizeField.fail('must be a multiple of 2 MiB');
    const nodeField = o.opt('node');
    const node = nodeField?.int({ max: Math.max(0, mem.numa.length - 1) });
    if (nodeField && mem.numa.length === 0) nodeField.fail('needs memory.numa nodes');
    const path = o.opt('path')?.nonEmptyString();
    if (type === 'nvdimm' && path === undefined)
      o.field('path').fail('an nvdimm needs a backing file path');
    if (type === 'pc-dimm' && path !== undefined) o.field('path').fail('only nvdimm takes a path');
    o.done();
    dimms.push({ id: `dimm${i}`, type, size, node, path });
  }
  if (dimms.length === 0) return dimms;
  const used = dimms.length;
  if (mem.slots === undefined || mem.slots < used) {
    parent
      .field('slots')
      .fail(`${used} DIMM(s) in memory.dimms need memory.slots of at least ${used}`);
  }
  const total = mem.size + dimms.reduce((s, d) => s + d.size, 0);
  if (mem.maxmem === undefined || mem.maxmem < total) {
    parent
      .field('maxmem')
      .fail(
        `memory.size + DIMMs = ${sz(total)} needs memory.maxmem of at least that` +
          (mem.maxmem === undefined ? '' : ` (it is ${sz(mem.maxmem)})`),
      );
  }
  return dimms;
}
