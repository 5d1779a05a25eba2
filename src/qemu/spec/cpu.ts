// `cpu` (model and features) and `smp` (topology). The topology is completed the way QEMU 7.2
// does it (hw/core/machine-smp.c machine_parse_smp_config: cores preferred over sockets since
// 6.2) and then emitted fully explicit, so the guest never depends on QEMU's guesses.

import type { CpuModel, CpuSlot, MachineFamily, SmpModel } from '../model.js';
import type { Field, ObjectReader } from './reader.js';

const FEATURE_NAME = /^[A-Za-z0-9_.-]+$/;

/** `cpu`: a model name, or `{model, features: {name: bool|number|string}}`. */
export function readCpu(spec: ObjectReader): CpuModel {
  const f = spec.field('cpu');
  if (!f.present) return { model: 'auto', features: [] };
  if (!f.isObject()) return { model: modelName(f), features: [] };
  const o = f.object();
  const model = o.opt('model');
  const cpu: CpuModel = { model: model ? modelName(model) : 'auto', features: [] };
  const feats = o.opt('features');
  if (feats) {
    const fo = feats.object();
    for (const key of fo.keys()) {
      const v = fo.field(key);
      if (!FEATURE_NAME.test(key)) v.fail('a CPU feature name has only letters, digits, _ . -');
      const val = v.value;
      if (typeof val === 'boolean') cpu.features.push([key, val ? 'on' : 'off']);
      else if (typeof val === 'number' && Number.isInteger(val)) cpu.features.push([key, `${val}`]);
      else if (typeof val === 'string' && /^[A-Za-z0-9_.-]+$/.test(val))
        cpu.features.push([key, val]);
      else v.expected('true, false, an integer or a simple word');
    }
    fo.done();
  }
  o.done();
  return cpu;
}

function modelName(f: Field): string {
  const name = f.nonEmptyString();
  if (!FEATURE_NAME.test(name)) f.expected('a CPU model name such as max, host or cortex-a57');
  return name;
}

/** Most CPUs each machine family accepts (QEMU 7.2 mc->max_cpus; virt with GICv3). */
const MAX_CPUS: Record<MachineFamily, number> = { virt: 512, q35: 288, pc: 255 };

const LEVELS = ['sockets', 'dies', 'clusters', 'cores', 'threads'] as const;
type Level = (typeof LEVELS)[number];

/** `smp`: a CPU count, or `{cpus, maxcpus, sockets, dies, clusters, cores, threads, coldplug}`. */
export function readSmp(spec: ObjectReader, family: MachineFamily, gicVersion: string): SmpModel {
  const f = spec.field('smp');
  if (!f.present) return complete(f, {}, family, gicVersion, []);
  if (!f.isObject()) {
    return complete(f, { cpus: f.int({ min: 1, max: MAX_CPUS[family] }) }, family, gicVersion, []);
  }
  const o = f.object();
  const given: Partial<Record<Level | 'cpus' | 'maxcpus', number>> = {};
  for (const key of ['cpus', 'maxcpus', ...LEVELS] as const) {
    const v = o.opt(key);
    if (v) given[key] = v.int({ min: 1, max: 4096 });
  }
  // Levels the machine lacks must be omitted or 1 (machine-smp.c: "dies not supported by this
  // machine's CPU topology"): dies exist on PC machines, clusters on arm virt.
  const unsupported: [Level, MachineFamily[]][] = [
    ['dies', ['q35', 'pc']],
    ['clusters', ['virt']],
  ];
  for (const [level, families] of unsupported) {
    if ((given[level] ?? 1) > 1 && !families.includes(family)) {
      o.field(level).fail(
        `${level} are not supported by the ${family} machine's CPU topology; omit it or use 1`,
      );
    }
  }
  const coldplugField = o.opt('coldplug');
  o.done();
  const smp = complete(f, given, family, gicVersion, []);
  if (coldplugField) smp.coldplug = readColdplug(coldplugField, smp, family);
  return smp;
}

function complete(
  f: Field,
  given: Partial<Record<Level | 'cpus' | 'maxcpus', number>>,
  family: MachineFamily,
  gicVersion: string,
  coldplug: CpuSlot[],
): SmpModel {
  const dies = given.dies ?? 1;
  const clusters = given.clusters ?? 1;
  let { cpus, maxcpus, sockets, cores, threads } = given;
  if (cpus === undefined && maxcpus === undefined) {
    sockets ??= 1;
    cores ??= 1;
    threads ??= 1;
    if (!given.sockets && !given.cores && !given.threads && !given.dies && !given.clusters) {
      cpus = maxcpus = 1;
    } else {
      maxcpus = sockets * dies * clusters * cores * threads;
      cpus = maxcpus;
    }
  } else {
    maxcpus ??= cpus!;
    // Cores are preferred over sockets since QEMU 6.2 (machine-smp.c).
    if (cores === undefined) {
      sockets ??= 1;
      threads ??= 1;
      cores = Math.max(1, Math.floor(maxcpus / (sockets * dies * clusters * threads)));
    } else if (sockets === undefined) {
      threads ??= 1;
      sockets = Math.max(1, Math.floor(maxcpus / (dies * clusters * cores * threads)));
    } else if (threads === undefined) {
      threads = Math.max(1, Math.floor(maxcpus / (sockets * dies * clusters * cores)));
    }
    cpus ??= maxcpus;
  }
  sockets ??= 1;
  cores ??= 1;
  threads ??= 1;
  const product = sockets * dies * clusters * cores * threads;
  if (product !== maxcpus) {
    const terms = [
      `sockets (${sockets})`,
      ...(family === 'virt' ? [] : [`dies (${dies})`]),
      ...(family === 'virt' ? [`clusters (${clusters})`] : []),
      `cores (${cores})`,
      `threads (${threads})`,
    ];
    f.fail(
      `the CPU topology ${terms.join(' × ')} = ${product} CPUs must equal maxcpus (${maxcpus})`,
    );
  }
  if (cpus > maxcpus) f.fail(`cpus (${cpus}) must not exceed maxcpus (${maxcpus})`);
  const limit = family === 'virt' && gicVersion === '2' ? 8 : MAX_CPUS[family];
  if (maxcpus > limit) {
    const why = family === 'virt' && gicVersion === '2' ? ' with machine.gicVersion 2 (use 3)' : '';
    f.fail(`maxcpus (${maxcpus}) exceeds the ${family} machine's limit of ${limit}${why}`);
  }
  return { cpus, maxcpus, sockets, dies, clusters, cores, threads, coldplug };
}

/** Linear CPU index of a slot, in QEMU's order (thread fastest, then core, cluster, die). */
export function slotIndex(smp: SmpModel, s: CpuSlot): number {
  return (
    (((s.socket * smp.dies + s.die) * smp.clusters + s.cluster) * smp.cores + s.core) *
      smp.threads +
    s.thread
  );
}

function readColdplug(f: Field, smp: SmpModel, family: MachineFamily): CpuSlot[] {
  if (family === 'virt') {
    f.fail(
      'the virt machine cannot add CPUs with -device in QEMU 7.2 (no CPU hotplug); raise smp.cpus instead',
    );
  }
  const slots: CpuSlot[] = [];
  const taken = new Map<number, string>();
  for (const item of f.array()) {
    const o = item.object();
    const id = (key: string, count: number): number =>
      o.opt(key)?.int({ min: 0, max: count - 1 }) ?? 0;
    const slot: CpuSlot = {
      socket: id('socket', smp.sockets),
      die: id('die', smp.dies),
      cluster: id('cluster', smp.clusters),
      core: id('core', smp.cores),
      thread: id('thread', smp.threads),
    };
    o.done();
    const index = slotIndex(smp, slot);
    if (index < smp.cpus) {
      item.fail(`CPU index ${index} is already one of the ${smp.cpus} boot CPUs (smp.cpus)`);
    }
    const other = taken.get(index);
    if (other) item.fail(`the same CPU slot as ${other}`);
    taken.set(index, item.path);
    slots.push(slot);
  }
  if (smp.cpus + slots.length > smp.maxcpus) {
    f.fail(`cpus (${smp.cpus}) + ${slots.length} cold-plugged exceed maxcpus (${smp.maxcpus})`);
  }
  return slots;
}
