// Side-by-side runs of one qemu-img operation: the same image is prepared once (with qemu-img
// and qemu-io), copied into q/ and v/, the operation runs with qemu-img in q/ and with vmforge-img
// in v/, and the two results are compared the way a user would notice a difference: exit code,
// stdout and stderr (tool name swapped), `qemu-img info --output=json` (except filename,
// actual-size and snapshot dates), guest content of the image and of every snapshot, and
// `qemu-img check` (clean, and the same image end offset and allocation).
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { img } from './run.js';

const ENV = { ...process.env, LC_ALL: 'C', TZ: 'UTC' };

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a QEMU tool synchronously in `cwd`, capturing both streams whatever the exit code. */
export function tool(cwd: string, file: string, args: string[]): ToolResult {
  const r = spawnSync(file, args, {
    cwd,
    env: ENV,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  return {
    code: r.status ?? 128,
    stdout: r.stdout.toString('latin1'),
    stderr: r.stderr.toString('latin1'),
  };
}

/**
 * vmforge-img run in-process in `cwd` (the test runner's forks may chdir; relative names then
 * resolve as they do for qemu-img in its directory).
 */
export async function vmforgeImg(cwd: string, args: string[]): Promise<ToolResult> {
  const old = process.cwd();
  process.chdir(cwd);
  try {
    return await img(args, cwd);
  } finally {
    process.chdir(old);
  }
}

/** A tool run that must succeed. */
export function must(cwd: string, file: string, args: string[]): string {
  const r = tool(cwd, file, args);
  if (r.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

/** Prepare `dir/q` with `prep` (commands run there), then copy it to `dir/v`. */
export function prepare(dir: string, prep: (cwd: string) => void): { q: string; v: string } {
  const q = join(dir, 'q');
  const v = join(dir, 'v');
  rmSync(q, { recursive: true, force: true });
  rmSync(v, { recursive: true, force: true });
  mkdirSync(q, { recursive: true });
  prep(q);
  cpSync(q, v, { recursive: true });
  return { q, v };
}

function normalizeInfo(text: string): unknown {
  const info = JSON.parse(text) as Record<string, unknown>;
  delete info['filename'];
  delete info['actual-size'];
  const snaps = info['snapshots'] as Record<string, unknown>[] | undefined;
  for (const s of snaps ?? []) {
    delete s['date-sec'];
    delete s['date-nsec'];
  }
  return info;
}

function snapshotIds(cwd: string, image: string): string[] {
  const r = tool(cwd, 'qemu-img', ['info', '--output=json', '-U', image]);
  if (r.code !== 0) return [];
  const info = JSON.parse(r.stdout) as { snapshots?: { id: string }[] };
  return (info.snapshots ?? []).map((s) => s.id);
}

function rawContent(cwd: string, image: string, snapshot?: string): Buffer | string {
  const out = join(cwd, `content-${snapshot ?? 'active'}.raw`);
  const r = tool(cwd, 'qemu-img', [
    'convert',
    '-U',
    ...(snapshot ? ['-l', `snapshot.id=${snapshot}`] : []),
    '-O',
    'raw',
    image,
    out,
  ]);
  if (r.code !== 0) return `convert failed: ${r.stderr}`;
  const data = readFileSync(out);
  rmSync(out);
  return data;
}

interface CheckSummary {
  clean: boolean;
  text: string;
  layout: string;
}

function check(cwd: string, image: string): CheckSummary {
  const json = tool(cwd, 'qemu-img', ['check', '--output=json', image]);
  try {
    const j = JSON.parse(json.stdout) as Record<string, unknown>;
    return {
      clean: json.code === 0,
      text: json.stdout + json.stderr,
      layout: `end=${String(j['image-end-offset'])} allocated=${String(j['allocated-clusters'])}`,
    };
  } catch {
    return { clean: false, text: json.stdout + json.stderr, layout: json.stderr };
  }
}

export interface ParityOptions {
  /** The image to inspect after the operation (relative to q/ and v/). */
  image: string;
  /** The format for info (raw images are compared as files too). */
  compareLayout?: boolean;
}

/**
 * Run `qemu-img ARGS` in q and `vmforge-img ARGS` in v, and list every difference (empty when
 * the results agree).
 */
export async function runBoth(
  dirs: { q: string; v: string },
  args: string[],
  options: ParityOptions,
): Promise<string[]> {
  const q = tool(dirs.q, 'qemu-img', args);
  const v = await vmforgeImg(dirs.v, args);
  const problems: string[] = [];
  const what = `[${args.join(' ')}]`;
  const qErr = q.stderr
    .replace(/^qemu-img:/gm, 'vmforge-img:')
    .replaceAll("Try 'qemu-img --help'", "Try 'vmforge-img --help'");
  if (q.code !== v.code) problems.push(`${what} exit ${q.code} vs ${v.code}`);
  if (q.stdout !== v.stdout)
    problems.push(`${what} stdout ${JSON.stringify(q.stdout)} vs ${JSON.stringify(v.stdout)}`);
  if (qErr !== v.stderr)
    problems.push(`${what} stderr ${JSON.stringify(qErr)} vs ${JSON.stringify(v.stderr)}`);
  problems.push(...compareImages(dirs, options).map((p) => `${what} ${p}`));
  return problems;
}

/** Differences between q/IMAGE and v/IMAGE as a qemu-img user would see them. */
export function compareImages(dirs: { q: string; v: string }, options: ParityOptions): string[] {
  const problems: string[] = [];
  const { image } = options;
  if (!existsSync(join(dirs.q, image)) || !existsSync(join(dirs.v, image))) {
    if (existsSync(join(dirs.q, image)) !== existsSync(join(dirs.v, image)))
      problems.push('one image exists, the other does not');
    return problems;
  }
  const qi = tool(dirs.q, 'qemu-img', ['info', '--output=json', '-U', image]);
  const vi = tool(dirs.v, 'qemu-img', ['info', '--output=json', '-U', image]);
  if (qi.code !== vi.code) problems.push(`info exit ${qi.code} vs ${vi.code}: ${vi.stderr}`);
  if (qi.code !== 0 || vi.code !== 0) return problems;
  const qInfo = JSON.stringify(normalizeInfo(qi.stdout), null, 1);
  const vInfo = JSON.stringify(normalizeInfo(vi.stdout), null, 1);
  if (qInfo !== vInfo) problems.push(`info differs:\n${qInfo}\nvs\n${vInfo}`);

  // Guest content: both fail to read it alike, or read the same bytes.
  const same = (a: Buffer | string, b: Buffer | string) =>
    typeof a === 'string' || typeof b === 'string' ? typeof a === typeof b : a.equals(b);
  const cmp = tool(dirs.q, 'qemu-img', ['compare', '-U', image, join(dirs.v, image)]);
  if (cmp.code !== 0) {
    const qa = rawContent(dirs.q, image);
    const va = rawContent(dirs.v, image);
    if (!same(qa, va)) problems.push(`guest content differs: ${cmp.stdout}${cmp.stderr}`);
  }
  for (const id of snapshotIds(dirs.q, image)) {
    if (!same(rawContent(dirs.q, image, id), rawContent(dirs.v, image, id)))
      problems.push(`content of snapshot ${id} differs`);
  }

  const format = (JSON.parse(qi.stdout) as { format: string }).format;
  if (format === 'qcow2') {
    const qc = check(dirs.q, image);
    const vc = check(dirs.v, image);
    if (!vc.clean && qc.clean) problems.push(`qemu-img check: ${vc.text}`);
    if ((options.compareLayout ?? true) && qc.layout !== vc.layout)
      problems.push(`layout ${qc.layout} vs ${vc.layout}`);
  }
  return problems;
}
