// NBD server benchmark: vmforge-nbd side by side with qemu-nbd and nbdkit's file plugin serving
// the same raw file over a unix socket, in one run, ratios printed (issue #4):
//   - nbdcopy reading the export to null: with 4 connections and with 1 connection
//   - nbdcopy writing a file into the export with 4 connections
//   - fio (ioengine=nbd) 4 KiB random reads at queue depth 1 and 16: p50, p99, IOPS
// Throughput cases report the median wall time of BENCH_RUNS runs (after one warm-up run);
// ratios are vmforge / peer, so <= 1.0 means vmforge is at least as fast.
//
// Run: npm run bench:nbd   (BENCH_NBD_MB=512 BENCH_RUNS=5 BENCH_FIO_SECONDS=3 BENCH_FIO_ROUNDS=3)
// Needs: qemu-nbd (qemu-utils), nbdkit, nbdcopy (libnbd-bin), fio (built with libnbd).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MB = Number(process.env['BENCH_NBD_MB'] ?? 512);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 5);
const FIO_SECONDS = Number(process.env['BENCH_FIO_SECONDS'] ?? 3);
const FIO_ROUNDS = Number(process.env['BENCH_FIO_ROUNDS'] ?? 3);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VMFORGE_NBD = join(ROOT, 'bin', 'vmforge-nbd.js');

type ServerKind = 'vmforge-nbd' | 'qemu-nbd' | 'nbdkit';
const SERVERS: ServerKind[] = ['vmforge-nbd', 'qemu-nbd', 'nbdkit'];

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

function command(kind: ServerKind, socket: string, file: string): [string, string[]] {
  switch (kind) {
    case 'vmforge-nbd':
      return [process.execPath, [VMFORGE_NBD, '-f', 'raw', '-t', '-e', '0', '-k', socket, file]];
    case 'qemu-nbd':
      // -e 0: several clients, so qemu advertises CAN_MULTI_CONN like nbdkit does.
      return ['qemu-nbd', ['-f', 'raw', '-t', '-e', '0', '-k', socket, file]];
    case 'nbdkit':
      return ['nbdkit', ['-f', '-U', socket, 'file', file]];
  }
}

async function waitForSocket(path: string, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection(path);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${path} never accepted connections`);
}

interface Running {
  uri: string;
  pid: number;
  stop(): Promise<void>;
}

async function startServer(kind: ServerKind, dir: string, file: string): Promise<Running> {
  const socket = join(dir, `${kind}.sock`);
  await rm(socket, { force: true });
  const [cmd, args] = command(kind, socket, file);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore'] });
  const stop = async () => {
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r(undefined) : proc.once('exit', r)));
  };
  try {
    await waitForSocket(socket, proc);
  } catch (err) {
    await stop();
    throw err;
  }
  return { uri: `nbd+unix:///?socket=${socket}`, pid: proc.pid!, stop };
}

function timeCommand(cmd: string, args: string[]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return ms;
}

/** CPU time (user + system, all threads) a process has used so far, in ms (Linux /proc). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the command name.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function randomFile(path: string, mb: number): Promise<void> {
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < mb; i++) {
    for (let j = 0; j < chunk.length; j += 4)
      chunk.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, j);
    await fh.write(chunk);
  }
  await fh.close();
}

interface FioResult {
  iops: number;
  p50: number;
  p99: number;
}

function fio(uri: string, depth: number, out: string, seconds = FIO_SECONDS): FioResult {
  const r = spawnSync(
    'fio',
    [
      '--name=randread',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randread',
      '--bs=4k',
      `--iodepth=${depth}`,
      `--size=${MB}M`,
      `--runtime=${seconds}`,
      '--time_based',
      '--output-format=json',
      `--output=${out}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (r.status !== 0) throw new Error(`fio failed: ${r.stderr.toString()}`);
  const j = JSON.parse(readFileSync(out, 'utf8')) as {
    jobs: { read: { iops: number; clat_ns: { percentile: Record<string, number> } } }[];
  };
  const read = j.jobs[0]!.read;
  return {
    iops: Math.round(read.iops),
    p50: read.clat_ns.percentile['50.000000']! / 1000,
    p99: read.clat_ns.percentile['99.000000']! / 1000,
  };
}

async function main(): Promise<void> {
  const missing = ['qemu-nbd', 'nbdkit', 'nbdcopy', 'fio'].filter((t) => !have(t));
  if (missing.length) {
    console.error(
      `bench:nbd needs ${missing.join(', ')} (apt-get install qemu-utils nbdkit libnbd-bin fio)`,
    );
    process.exitCode = 1;
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'vmforge-bench-nbd-'));
  try {
    console.log(
      `# vmforge-nbd benchmark: ${MB} MiB raw file on ${dir}, ${RUNS} runs (median), fio ${FIO_ROUNDS} x ${FIO_SECONDS}s (median)`,
    );
    const exportFile = join(dir, 'export.raw');
    const source = join(dir, 'source.raw');
    await randomFile(exportFile, MB);
    await randomFile(source, MB);
    // Warm the page cache for everyone alike.
    await readFile(exportFile);

    const results: Record<string, Record<ServerKind, number | FioResult>> = {};
    const record = (name: string, kind: ServerKind, v: number | FioResult) => {
      results[name] ??= {} as Record<ServerKind, number | FioResult>;
      results[name]![kind] = v;
    };

    // Throughput: rounds interleave the servers so background noise hits all of them alike.
    const cases: [string, (uri: string) => string[], boolean][] = [
      ['read, nbdcopy -C 4 (ms)', (uri) => ['-C', '4', uri, 'null:'], false],
      ['read, nbdcopy -C 1 (ms)', (uri) => ['-C', '1', uri, 'null:'], false],
      ['write, nbdcopy -C 4 (ms)', (uri) => ['-C', '4', source, uri], true],
    ];
    for (const [name, argv, writes] of cases) {
      const times: Record<ServerKind, number[]> = { 'vmforge-nbd': [], 'qemu-nbd': [], nbdkit: [] };
      const cpu: Record<ServerKind, number[]> = { 'vmforge-nbd': [], 'qemu-nbd': [], nbdkit: [] };
      const running = new Map<ServerKind, Running>();
      try {
        for (const kind of SERVERS) {
          const target = writes ? join(dir, `target-${kind}.raw`) : exportFile;
          if (writes) {
            const fh = await open(target, 'w');
            await fh.truncate(MB << 20);
            await fh.close();
          }
          running.set(kind, await startServer(kind, dir, target));
        }
        // Round 0 warms up page cache, block allocation and vmforge's JIT; it is not counted.
        for (let round = 0; round <= RUNS; round++) {
          for (const kind of SERVERS) {
            const { uri, pid } = running.get(kind)!;
            const before = cpuMs(pid);
            const ms = timeCommand('nbdcopy', argv(uri));
            if (round > 0) {
              times[kind].push(ms);
              cpu[kind].push(cpuMs(pid) - before);
            }
          }
        }
      } finally {
        for (const r of running.values()) await r.stop();
      }
      for (const kind of SERVERS) record(name, kind, median(times[kind]));
      for (const kind of SERVERS) {
        record(name.replace('(ms)', '(server CPU ms)'), kind, median(cpu[kind]));
      }
    }

    // fio: the servers run side by side and take turns, FIO_ROUNDS rounds after a 1 s warm-up
    // each; IOPS, p50 and p99 are the medians over the rounds (one run per server moved QD1
    // IOPS by ±8 % between otherwise identical runs).
    for (const depth of [1, 16]) {
      const running = new Map<ServerKind, Running>();
      const samples: Record<ServerKind, FioResult[]> = {
        'vmforge-nbd': [],
        'qemu-nbd': [],
        nbdkit: [],
      };
      try {
        for (const kind of SERVERS) running.set(kind, await startServer(kind, dir, exportFile));
        for (const kind of SERVERS) fio(running.get(kind)!.uri, depth, join(dir, 'fio.json'), 1);
        for (let round = 0; round < FIO_ROUNDS; round++) {
          for (const kind of SERVERS) {
            samples[kind].push(fio(running.get(kind)!.uri, depth, join(dir, 'fio.json')));
          }
        }
      } finally {
        for (const r of running.values()) await r.stop();
      }
      for (const kind of SERVERS) {
        const xs = samples[kind];
        record(`4k randread QD${depth}`, kind, {
          iops: median(xs.map((x) => x.iops)),
          p50: median(xs.map((x) => x.p50)),
          p99: median(xs.map((x) => x.p99)),
        });
      }
    }

    // Report.
    const lines: string[] = [];
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    lines.push('| case | vmforge-nbd | qemu-nbd | nbdkit | vmforge/qemu-nbd | vmforge/nbdkit |');
    lines.push('|---|---|---|---|---|---|');
    for (const [name, by] of Object.entries(results)) {
      const v = by['vmforge-nbd'];
      const q = by['qemu-nbd'];
      const k = by['nbdkit'];
      if (typeof v === 'number' && typeof q === 'number' && typeof k === 'number') {
        const mbps = (ms: number) =>
          name.includes('CPU')
            ? ms.toFixed(0)
            : `${ms.toFixed(0)} (${((MB / ms) * 1000).toFixed(0)} MiB/s)`;
        lines.push(
          `| ${name} | ${mbps(v)} | ${mbps(q)} | ${mbps(k)} | ${ratio(v, q)} | ${ratio(v, k)} |`,
        );
      } else {
        const f = (x: number | FioResult) => {
          const r = x as FioResult;
          return `p50 ${r.p50.toFixed(1)} µs, p99 ${r.p99.toFixed(1)} µs, ${r.iops} IOPS`;
        };
        const vr = v as FioResult;
        const qr = q as FioResult;
        const kr = k as FioResult;
        lines.push(
          `| ${name} | ${f(v)} | ${f(q)} | ${f(k)} | p50 ${ratio(vr.p50, qr.p50)}, p99 ${ratio(vr.p99, qr.p99)}, IOPS ${ratio(qr.iops, vr.iops)} | p50 ${ratio(vr.p50, kr.p50)}, p99 ${ratio(vr.p99, kr.p99)}, IOPS ${ratio(kr.iops, vr.iops)} |`,
        );
      }
    }
    lines.push('');
    lines.push(
      'Ratios are vmforge/peer for times and latencies, peer/vmforge for IOPS: <= 1.00 means vmforge is at least as fast.',
    );
    console.log(lines.join('\n'));
    const outDir = join(ROOT, 'bench', 'results');
    await mkdir(outDir, { recursive: true });
    await writeFile(
      join(outDir, `nbd-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
      JSON.stringify(
        { mb: MB, runs: RUNS, fioSeconds: FIO_SECONDS, node: process.version, results },
        null,
        2,
      ),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
