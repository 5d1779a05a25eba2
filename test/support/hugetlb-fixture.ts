// A fixture tree from test/fixtures/hugetlbfs/ copied to a temp dir, behind a HugetlbHost whose
// writes to nr_hugepages and mount(8)/umount(8) calls are simulated like the kernel does them:
// a write sets persistent pages (surplus first promoted, in-use pages beyond a shrunk pool turned
// into surplus), capped per node by `.capacity.json`; mount lines are written to proc/mounts in
// the order hugetlbfs_show_options prints options (checked against the real kernel in
// test/interop/hugepages-real.test.ts). Only for unit tests; real behaviour is tested as root.

import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { localHost, type HugetlbHost, type RunOutcome } from '../../src/hugetlbfs/index.js';
import { tempDir } from './tmp.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/hugetlbfs/', import.meta.url));

export interface FixtureOptions {
  /** Writes fail with EACCES, as for a non-root user. */
  readOnly?: boolean;
  /** mount(8) fails as it does for a non-root user. */
  mountDenied?: boolean;
}

export interface Fixture {
  host: HugetlbHost;
  root: string;
  /** Every mount/umount argv the host was asked to run. */
  runs: string[][];
  read(path: string): Promise<string>;
}

function errno(code: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${path}`), { code });
}

export async function fixtureHost(name: string, options: FixtureOptions = {}): Promise<Fixture> {
  const root = await tempDir('vmforge-hugetlb-');
  await cp(join(FIXTURES, name), root, { recursive: true, verbatimSymlinks: true });
  const at = (p: string) => join(root, p);
  const read = (p: string) => readFile(at(p), 'utf8');
  const readNum = async (p: string) => Number((await read(p)).trim());
  const put = (p: string, v: number | string) => writeFile(at(p), `${v}\n`);
  const runs: string[][] = [];

  let capacity: Record<string, number[]> = {};
  try {
    capacity = JSON.parse(await read('.capacity.json')) as Record<string, number[]>;
  } catch {
    /* unlimited */
  }
  const defaultKb = async () => {
    const m = /Hugepagesize:\s+(\d+) kB/.exec(await read('proc/meminfo'));
    return m ? Number(m[1]) : undefined;
  };
  const nodesOf = async (kb: number) => {
    const nodes: number[] = [];
    for (let n = 0; n < 8; n++) {
      try {
        await read(`sys/devices/system/node/node${n}/hugepages/hugepages-${kb}kB/nr_hugepages`);
        nodes.push(n);
      } catch {
        break;
      }
    }
    return nodes;
  };

  /** Set persistent pages of `kb` on `only` (or spread globally), then refresh every view. */
  async function setPool(kb: number, target: number, only: number | undefined) {
    const pageSize = kb * 1024;
    const nodes = await nodesOf(kb);
    interface NodeState {
      n: number;
      d: string;
      total: number;
      free: number;
      surplus: number;
      cap: number;
    }
    const st: NodeState[] = [];
    for (const n of nodes) {
      const d = `sys/devices/system/node/node${n}/hugepages/hugepages-${kb}kB`;
      st.push({
        n,
        d,
        total: await readNum(`${d}/nr_hugepages`),
        free: await readNum(`${d}/free_hugepages`),
        surplus: await readNum(`${d}/surplus_hugepages`),
        cap: capacity[String(pageSize)]?.[n] ?? Infinity,
      });
    }
    const targets = only === undefined ? st : st.filter((s) => s.n === only);
    const persistent = () => targets.reduce((a, s) => a + s.total - s.surplus, 0);
    let want = target - persistent();
    // Growing: promote surplus pages first, then allocate round-robin within capacity.
    for (const s of targets) {
      const promote = Math.min(s.surplus, Math.max(0, want));
      s.surplus -= promote;
      want -= promote;
    }
    let progress = true;
    while (want > 0 && progress) {
      progress = false;
      for (const s of targets) {
        if (want > 0 && s.total < s.cap) {
          s.total++;
          s.free++;
          want--;
          progress = true;
        }
      }
    }
    // Shrinking: free unused pages, then turn in-use ones into surplus.
    progress = true;
    while (want < 0 && progress) {
      progress = false;
      for (const s of targets) {
        if (want < 0 && s.free > 0 && s.total - s.surplus > 0) {
          s.total--;
          s.free--;
          want++;
          progress = true;
        }
      }
    }
    for (const s of targets) {
      while (want < 0 && s.total - s.surplus > 0) {
        s.surplus++;
        want++;
      }
    }
    for (const s of st) {
      await put(`${s.d}/nr_hugepages`, s.total);
      await put(`${s.d}/free_hugepages`, s.free);
      await put(`${s.d}/surplus_hugepages`, s.surplus);
    }
    const g = `sys/kernel/mm/hugepages/hugepages-${kb}kB`;
    const sum = (f: (s: NodeState) => number) => st.reduce((a, s) => a + f(s), 0);
    await put(
      `${g}/nr_hugepages`,
      sum((s) => s.total),
    );
    await put(
      `${g}/nr_hugepages_mempolicy`,
      sum((s) => s.total),
    );
    await put(
      `${g}/free_hugepages`,
      sum((s) => s.free),
    );
    await put(
      `${g}/surplus_hugepages`,
      sum((s) => s.surplus),
    );
    if (kb === (await defaultKb())) {
      await put(
        'proc/sys/vm/nr_hugepages',
        sum((s) => s.total - s.surplus),
      );
      let meminfo = await read('proc/meminfo');
      const set = (key: string, v: number) =>
        (meminfo = meminfo.replace(new RegExp(`^${key}:.*$`, 'm'), `${key}:   ${v}`));
      set(
        'HugePages_Total',
        sum((s) => s.total),
      );
      set(
        'HugePages_Free',
        sum((s) => s.free),
      );
      set(
        'HugePages_Surp',
        sum((s) => s.surplus),
      );
      await writeFile(at('proc/meminfo'), meminfo);
    }
  }

  const base = localHost({ root, run: (file, args) => simulate(file, [...args]) });

  async function simulate(file: string, args: string[]): Promise<RunOutcome> {
    runs.push([file, ...args]);
    const fail = (stderr: string): RunOutcome => ({ code: 32, stdout: '', stderr });
    if (options.mountDenied) return fail(`${file}: only root can use "--types" option\n`);
    const mounts = await read('proc/mounts');
    if (file === 'umount') {
      const dir = args.at(-1)!;
      const lines = mounts.trimEnd().split('\n');
      const idx = lines.findLastIndex((l) => l.split(' ')[1] === dir.replace(/ /g, '\\040'));
      if (idx < 0) return fail(`umount: ${dir}: not mounted.\n`);
      lines.splice(idx, 1);
      await writeFile(at('proc/mounts'), lines.join('\n') + '\n');
      return { code: 0, stdout: '', stderr: '' };
    }
    // mount -t hugetlbfs -o OPTS none DIR
    const [, , , opts, , dir] = args;
    if (!(await base.isDirectory(dir!)))
      return fail(`mount: ${dir}: mount point does not exist.\n`);
    const o = new Map(opts!.split(',').map((kv) => kv.split('=') as [string, string]));
    const kb = (() => {
      const m = /^(\d+)([KMG])$/.exec(o.get('pagesize') ?? '');
      return m ? Number(m[1]) * { K: 1, M: 1024, G: 1024 * 1024 }[m[2] as 'K' | 'M' | 'G'] : 0;
    })();
    const g = `sys/kernel/mm/hugepages/hugepages-${kb}kB`;
    let persistent: number;
    try {
      persistent = (await readNum(`${g}/nr_hugepages`)) - (await readNum(`${g}/surplus_hugepages`));
    } catch {
      return fail(`mount: ${dir}: wrong fs type, bad option, bad superblock on none.\n`);
    }
    const pages = (v: string | undefined) => {
      if (v === undefined) return undefined;
      if (v.endsWith('%')) return Math.floor((Number(v.slice(0, -1)) * persistent) / 100);
      return Math.floor(Number(v) / (kb * 1024));
    };
    const maxPages = pages(o.get('size'));
    const minPages = pages(o.get('min_size'));
    if (minPages !== undefined) {
      const avail = (await readNum(`${g}/free_hugepages`)) - (await readNum(`${g}/resv_hugepages`));
      if (minPages > avail) {
        return fail(`mount: ${dir}: mount(2) system call failed: Cannot allocate memory.\n`);
      }
      await put(`${g}/resv_hugepages`, (await readNum(`${g}/resv_hugepages`)) + minPages);
    }
    const shown = ['rw', 'relatime'];
    for (const key of ['uid', 'gid']) {
      const v = o.get(key);
      if (v !== undefined && v !== '0') shown.push(`${key}=${v}`);
    }
    const mode = o.get('mode');
    if (mode !== undefined && (parseInt(mode, 8) & 0o1777) !== 0o755) {
      shown.push(`mode=${(parseInt(mode, 8) & 0o1777).toString(8)}`);
    }
    if (o.has('nr_inodes')) shown.push(`nr_inodes=${o.get('nr_inodes')}`);
    shown.push(`pagesize=${kb >= 1024 ? `${kb / 1024}M` : `${kb}K`}`);
    if (maxPages !== undefined) shown.push(`size=${maxPages * kb * 1024}`);
    if (minPages !== undefined) shown.push(`min_size=${minPages * kb * 1024}`);
    const line = `none ${dir!.replace(/ /g, '\\040')} hugetlbfs ${shown.join(',')} 0 0`;
    await writeFile(at('proc/mounts'), mounts + line + '\n');
    return { code: 0, stdout: '', stderr: '' };
  }

  const host: HugetlbHost = {
    ...base,
    async writeText(path, text) {
      if (options.readOnly) throw errno('EACCES', path);
      const value = Number(text.trim());
      let m = /^\/sys\/kernel\/mm\/hugepages\/hugepages-(\d+)kB\/nr_hugepages$/.exec(path);
      if (m) return setPool(Number(m[1]), value, undefined);
      m =
        /^\/sys\/devices\/system\/node\/node(\d+)\/hugepages\/hugepages-(\d+)kB\/nr_hugepages$/.exec(
          path,
        );
      if (m) return setPool(Number(m[2]), value, Number(m[1]));
      if (path === '/proc/sys/vm/nr_hugepages')
        return setPool((await defaultKb())!, value, undefined);
      return base.writeText(path, text);
    },
    async statfs(path) {
      // hugetlbfs statfs: bsize = page size; with size= blocks = limit, bfree = what is left
      // (nothing is in use in the fixtures' mounts).
      const line = (await read('proc/mounts'))
        .split('\n')
        .findLast((l) => l.split(' ')[1] === path.replace(/ /g, '\\040'));
      const size = /[ ,]size=(\d+)/.exec(line ?? '');
      const ps = /pagesize=(\d+)([KM])/.exec(line ?? '');
      const bsize = ps ? Number(ps[1]) * (ps[2] === 'M' ? 2 ** 20 : 1024) : 4096;
      const blocks = size ? Number(size[1]) / bsize : 0;
      return { bsize, blocks, bfree: blocks };
    },
  };
  return { host, root, runs, read };
}
