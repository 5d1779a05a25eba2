// The machine as the hugetlbfs helpers see it: a few file operations on /proc and /sys, a
// directory maker, statfs, and a way to run mount(8)/umount(8). Everything goes through a
// HugetlbHost so tests can point the helpers at fixture trees (`root`) with a fake runner, and
// so --dry-run can record every write and mount instead of performing it.

import { execFile } from 'node:child_process';
import { mkdir, open, readdir, readFile, readlink, realpath, stat, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

/** What a spawned program left behind (mount, umount). */
export interface RunOutcome {
  /** Exit status; -1 when the program could not be started (see `spawnError`). */
  code: number;
  stdout: string;
  stderr: string;
  /** errno code when the program could not be started at all (ENOENT: not installed). */
  spawnError?: string;
}

/** Runs a program from an argv array, never through a shell. */
export type Runner = (file: string, args: readonly string[]) => Promise<RunOutcome>;

/** statfs(2) fields the helpers use: hugetlbfs reports its page size as bsize. */
export interface FsStats {
  bsize: number;
  blocks: number;
  bfree: number;
}

/**
 * Everything the hugetlbfs helpers do to the machine. Paths are host paths ("/proc/meminfo");
 * an implementation may map them elsewhere (a fixture tree). Errors are Node system errors
 * (with `code`: ENOENT, EACCES, ...), which the helpers translate into vmforge errors.
 */
export interface HugetlbHost {
  /** Where "/" is for this host (informational; "/" for the real machine). */
  readonly root: string;
  readText(path: string): Promise<string>;
  /** Write to an existing file (sysfs/procfs knobs): never creates it. */
  writeText(path: string, text: string): Promise<void>;
  readDir(path: string): Promise<string[]>;
  readLink(path: string): Promise<string>;
  exists(path: string): Promise<boolean>;
  isDirectory(path: string): Promise<boolean>;
  mkdirp(path: string): Promise<void>;
  /** The canonical absolute path (symlinks resolved as far as the path exists). */
  canonical(path: string): Promise<string>;
  statfs(path: string): Promise<FsStats>;
  run: Runner;
}

/** A mutating operation, performed or (in a dry run) only intended. */
export type HostAction =
  | { kind: 'write'; path: string; value: string }
  | { kind: 'mkdir'; path: string }
  | { kind: 'run'; argv: string[] };

/** The real runner: execFile with an argv array, LC_ALL=C so messages are parseable. */
export const execRunner: Runner = (file, args) =>
  new Promise((resolvePromise) => {
    execFile(
      file,
      [...args],
      { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' }, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err && typeof err.code === 'string') {
          resolvePromise({ code: -1, stdout, stderr, spawnError: err.code });
          return;
        }
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolvePromise({ code, stdout, stderr });
      },
    );
  });

export interface LocalHostOptions {
  /** Directory that stands for "/" (a fixture tree); default "/". */
  root?: string;
  /** How to run mount/umount; default execRunner (the real programs). */
  run?: Runner;
}

/** The machine itself (root "/"), or a fixture tree mapped under `root`. */
export function localHost(options: LocalHostOptions = {}): HugetlbHost {
  const root = resolve(options.root ?? '/');
  const at = (p: string) => (root === '/' ? p : join(root, p));
  // realpath() of a path under root starts with the real path of root, which may differ from
  // `root` when a parent is a symlink; strip that to get back to a host path.
  let realRoot: Promise<string> | undefined;
  const fromRoot = async (p: string) => {
    if (root === '/') return p;
    realRoot ??= realpath(root);
    return '/' + p.slice((await realRoot).length).replace(/^\/+/, '');
  };
  return {
    root,
    readText: (p) => readFile(at(p), 'utf8'),
    async writeText(p, text) {
      // 'r+' so a missing knob is ENOENT rather than a new file; one write(2), as `echo N >`.
      const handle = await open(at(p), 'r+');
      try {
        // A fixture file is a plain file that must lose its old contents; kernel knobs are not.
        if (root !== '/') await handle.truncate(0);
        await handle.write(text, 0);
      } finally {
        await handle.close();
      }
    },
    readDir: (p) => readdir(at(p)),
    readLink: (p) => readlink(at(p)),
    exists: (p) =>
      stat(at(p)).then(
        () => true,
        () => false,
      ),
    isDirectory: (p) =>
      stat(at(p)).then(
        (s) => s.isDirectory(),
        () => false,
      ),
    mkdirp: async (p) => {
      await mkdir(at(p), { recursive: true });
    },
    async canonical(p) {
      // Resolve the longest existing prefix, keep the rest: /proc/mounts names canonical paths.
      let head = p;
      const tail: string[] = [];
      for (;;) {
        try {
          return join(await fromRoot(await realpath(at(head))), ...tail);
        } catch {
          const parent = dirname(head);
          if (parent === head) return p;
          tail.unshift(head.slice(parent.length).replace(/^\//, ''));
          head = parent;
        }
      }
    },
    async statfs(p) {
      const s = await statfs(at(p));
      return { bsize: s.bsize, blocks: s.blocks, bfree: s.bfree };
    },
    run: options.run ?? execRunner,
  };
}

/**
 * Wrap a host so every mutating call is appended to `actions`; with `dryRun` the calls are
 * only recorded (reads still go to the real host, so plans are computed from real state).
 */
export function recordingHost(
  host: HugetlbHost,
  actions: HostAction[],
  dryRun: boolean,
): HugetlbHost {
  return {
    ...host,
    async writeText(path, text) {
      actions.push({ kind: 'write', path, value: text.trim() });
      if (!dryRun) await host.writeText(path, text);
    },
    async mkdirp(path) {
      actions.push({ kind: 'mkdir', path });
      if (!dryRun) await host.mkdirp(path);
    },
    async run(file, args) {
      actions.push({ kind: 'run', argv: [file, ...args] });
      if (dryRun) return { code: 0, stdout: '', stderr: '' };
      return host.run(file, args);
    },
  };
}

/** Quote a word for a POSIX shell only when it needs it (for --dry-run output). */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An action as the shell command that does the same thing (hugeadm --dry-run style). */
export function actionToShell(action: HostAction): string {
  switch (action.kind) {
    case 'write':
      return `echo ${shellQuote(action.value)} > ${shellQuote(action.path)}`;
    case 'mkdir':
      return `mkdir -p ${shellQuote(action.path)}`;
    case 'run':
      return action.argv.map(shellQuote).join(' ');
  }
}
