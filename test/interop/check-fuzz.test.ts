// Differential fuzzing of check against qemu-img 7.2: a few random byte changes in the metadata
// of images with data, compressed clusters, zero clusters and a snapshot; check them without
// repair, with -r leaks and with -r all; vmforge must print what qemu-img prints. Fixed seeds,
// so a failure is reproducible (set CHECK_FUZZ_SEEDS=<first>:<count> to explore further).

import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { expectSameCheck, qemuCheck, vmforgeCheck, type Repair } from '../support/check-oracle.js';
import { run } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Config {
  name: string;
  opts: string;
  /** [start, length] regions the byte changes land in. */
  regions: (img: Uint8Array) => [number, number][];
  seeds: [number, number];
}

// Default layout: header, reftable, refblock, L1, first L2 table, then the snapshot's tables.
const DEFAULT_REGIONS = (): [number, number][] => [
  [0, 128],
  [0x10000, 64],
  [0x20000, 64],
  [0x30000, 16],
  [0x40000, 256],
  [0x80000, 0x30000],
];
const WIDE = (img: Uint8Array): [number, number][] => [
  [0, 128],
  [0, Math.min(img.length, 0x100000)],
];

const envSeeds = process.env['CHECK_FUZZ_SEEDS']?.split(':').map(Number);
const CONFIGS: Config[] = [
  { name: 'v3', opts: '', regions: DEFAULT_REGIONS, seeds: [1, 40] },
  { name: 'extended-l2', opts: 'extended_l2=on', regions: WIDE, seeds: [1000, 30] },
  { name: 'v2-4k', opts: 'compat=0.10,cluster_size=4096', regions: WIDE, seeds: [2100, 30] },
];

/**
 * Where vmforge's open deliberately differs (docs/check.md): offsets beyond 2^53 and sizes over
 * 8 PiB are refused when qemu-img would read zeros there.
 */
const KNOWN_OPEN_DIFFERENCE = /offset invalid|over 8 PiB/;

const MODES: Repair[] = [undefined, 'leaks', 'all'];

describeWithTools(['qemu-img', 'qemu-io'], 'check: differential fuzzing vs qemu-img', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmforge-check-fuzz-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  for (const config of CONFIGS) {
    const [first, count] = envSeeds ?? config.seeds;
    it(`${config.name}: seeds ${first}..${first! + count! - 1}`, { timeout: 180_000 }, async () => {
      const base = join(root, config.name);
      await mkdir(base, { recursive: true });
      const sh = async (cmd: string, args: string[]) => {
        const r = await run(cmd, args, { cwd: base });
        if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
      };
      const opts = config.opts ? ['-o', config.opts] : [];
      await sh('qemu-img', ['create', '-q', '-f', 'qcow2', ...opts, 't.qcow2', '64M']);
      const io = (cmds: string[]) =>
        sh('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), 't.qcow2']);
      await io(['write -P 1 0 128k', 'write -c -P 2 1M 64k', 'write -P 3 9M 64k']);
      await sh('qemu-img', ['snapshot', '-c', 's1', 't.qcow2']);
      await io(['write -P 4 64k 128k', 'write -z 9M 64k']);
      const original = new Uint8Array(await readFile(join(base, 't.qcow2')));

      for (let seed = first!; seed < first! + count!; seed++) {
        const random = prng(seed);
        const img = original.slice();
        const regions = config.regions(img);
        for (let n = 1 + Math.floor(random() * 4); n > 0; n--) {
          const [start, length] = regions[Math.floor(random() * regions.length)]!;
          const at = start + Math.floor(random() * length);
          if (at < img.length) img[at] = Math.floor(random() * 256);
        }
        // QEMU opens an image read-write in check mode without its snapshot table, so
        // clearing unknown autoclear bits rewrites the header with no snapshots (docs/check.md).
        const autoclearChanged = img.subarray(88, 96).some((b, i) => b !== original[88 + i]);
        for (const repair of MODES) {
          if (repair && autoclearChanged) continue;
          const label = `${config.name} seed ${seed} [${repair ?? 'no repair'}]`;
          const q = join(root, `q-${seed}`);
          const v = join(root, `v-${seed}`);
          await mkdir(q, { recursive: true });
          await mkdir(v, { recursive: true });
          await writeFile(join(q, 't.qcow2'), img);
          await writeFile(join(v, 't.qcow2'), img);
          const ours = await vmforgeCheck(join(v, 't.qcow2'), repair);
          if (KNOWN_OPEN_DIFFERENCE.test(ours.stderr[0] ?? '')) {
            const theirs = await qemuCheck(join(q, 't.qcow2'), repair);
            if (!KNOWN_OPEN_DIFFERENCE.test(theirs.stderr[0] ?? '')) {
              expect(ours.exitCode, label).toBe(1);
              await rm(q, { recursive: true, force: true });
              await rm(v, { recursive: true, force: true });
              continue;
            }
          }
          await writeFile(join(v, 't.qcow2'), img);
          await expectSameCheck(join(q, 't.qcow2'), join(v, 't.qcow2'), repair, label);
          await rm(q, { recursive: true, force: true });
          await rm(v, { recursive: true, force: true });
        }
      }
    });
  }
});
