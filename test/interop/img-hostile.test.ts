// Hostile input: every damaged image of the battery (test/support/corrupt-images.ts) given to
// the commands that read images without changing them: info, map, convert, measure, compare, dd
// (check has its own battery test, check-battery), and rebase on copies. The exit status is qemu-img's (non-zero where it fails; where qemu-img
// 7.2 hangs, vmforge fails fast), an error is one clear "vmforge-img: ..." message with no stack
// trace, time and memory stay bounded (30 s, 400 MB peak RSS per command) and the image file is
// never modified. HOSTILE_ONLY=name,name runs a subset.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  corruptImageNames,
  makeCorruptImage,
  type CorruptImage,
} from '../support/corrupt-images.js';
import { binPath } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const TIMEOUT_MS = 30_000;
const MAX_RSS_MB = 400;
const HASHED_PREFIX = 64 * 1024 * 1024;

/** The length and the first 64 MiB (the battery patches metadata near the start only). */
function fileHash(path: string): string {
  const h = createHash('sha256').update(String(statSync(path).size));
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    for (let pos = 0; pos < HASHED_PREFIX; pos += buf.length) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

interface ToolRun {
  code: number | null;
  stderr: string;
  rssMb: number;
  timedOut: boolean;
}

/** Run under GNU time for the peak RSS (%M, KiB, the last line of stderr). */
function runTool(argv: string[], cwd: string): ToolRun {
  const r = spawnSync('/usr/bin/time', ['-f', '%M', ...argv], {
    cwd,
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
    env: { ...process.env, LC_ALL: 'C' },
  });
  const lines = (r.stderr ?? '').trimEnd().split('\n');
  const rss = Number(lines.pop());
  return {
    code: r.status,
    stderr: lines.join('\n'),
    rssMb: rss / 1024,
    timedOut: r.error !== undefined,
  };
}

/**
 * One "vmforge-img: ..." error, after any of QEMU's own corruption events, which qemu-img prints
 * the same way first ("qcow2: Image is corrupt: ...; further non-fatal corruption events will be
 * suppressed", qcow2_signal_corruption).
 */
function clearError(stderr: string): boolean {
  const lines = stderr.split('\n').filter((l) => !l.startsWith('qcow2: '));
  return lines.length > 0 && lines[0]!.startsWith('vmforge-img: ');
}

/** What every vmforge run must be, whatever qemu-img does: bounded, and clear when it fails. */
function boundedAndClear(label: string, run: ToolRun): string[] {
  const problems: string[] = [];
  if (run.timedOut) problems.push(`${label}: did not finish in ${TIMEOUT_MS / 1000} s`);
  if (run.rssMb > MAX_RSS_MB) problems.push(`${label}: peak RSS ${run.rssMb.toFixed(0)} MB`);
  if (/\n\s+at |internal error/.test(run.stderr)) {
    problems.push(`${label}: stack trace or internal error:\n${run.stderr}`);
  }
  if (run.code !== 0 && !clearError(run.stderr)) {
    problems.push(`${label}: unclear error: ${run.stderr}`);
  }
  return problems;
}

const COMMANDS: { name: string; args: (img: string) => string[] }[] = [
  { name: 'info', args: (img) => ['info', img] },
  { name: 'info json', args: (img) => ['info', '--output=json', img] },
  { name: 'map', args: (img) => ['map', img] },
  { name: 'map json', args: (img) => ['map', '--output=json', img] },
  { name: 'convert', args: (img) => ['convert', '-O', 'raw', img, 'out.raw'] },
  { name: 'convert qcow2', args: (img) => ['convert', '-O', 'qcow2', img, 'out.raw'] },
  { name: 'measure', args: (img) => ['measure', '-O', 'qcow2', img] },
  { name: 'compare', args: (img) => ['compare', img, img] },
  { name: 'dd', args: (img) => ['dd', `if=${img}`, 'of=out.raw', 'bs=64k', 'count=16'] },
];

const names = process.env['HOSTILE_ONLY']?.split(',') ?? corruptImageNames();

describeWithTools(['qemu-img'], 'damaged images: clear errors, bounded, never modified', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmforge-hostile-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each(names)('%s', { timeout: 10 * TIMEOUT_MS }, async (name) => {
    const img: CorruptImage = await makeCorruptImage(name, dir);
    const cwd = dirname(img.path);
    const failures: string[] = [];
    const before = fileHash(img.path);
    for (const cmd of COMMANDS) {
      const label = `${name} ${cmd.name}`;
      const ours = runTool([process.execPath, binPath('vmforge-img'), ...cmd.args(img.path)], cwd);
      failures.push(...boundedAndClear(label, ours));
      if (img.qemuHangs) {
        // qemu-img loops forever on these; vmforge must stop with an error for the data paths.
        if (ours.code === 0 && !cmd.name.startsWith('info')) {
          failures.push(`${label}: succeeded where qemu-img hangs`);
        }
      } else {
        const ref = runTool(['qemu-img', ...cmd.args(img.path)], cwd);
        if (!ref.timedOut && (ref.code === 0) !== (ours.code === 0)) {
          failures.push(
            `${label}: exit ${ours.code} where qemu-img exits ${ref.code}\n` +
              `  qemu: ${ref.stderr}\n  ours: ${ours.stderr}`,
          );
        }
      }
      if (fileHash(img.path) !== before) failures.push(`${label}: modified the image`);
      rmSync(join(cwd, 'out.raw'), { force: true });
    }
    // rebase writes the image it is given: each tool gets its own copy, the original is untouched.
    if (!img.qemuHangs) {
      const codes: (number | null)[] = [];
      for (const [tool, argv0] of [
        ['qemu-img', ['qemu-img']],
        ['vmforge-img', [process.execPath, binPath('vmforge-img')]],
      ] as const) {
        const copy = join(cwd, `rebase-${tool}-${basename(img.path)}`);
        copyFileSync(img.path, copy);
        const r = runTool([...argv0, 'rebase', '-b', '', copy], cwd);
        codes.push(r.code);
        if (tool === 'vmforge-img') failures.push(...boundedAndClear(`${name} rebase`, r));
      }
      if ((codes[0] === 0) !== (codes[1] === 0)) {
        failures.push(`${name} rebase: exit ${codes[1]} where qemu-img exits ${codes[0]}`);
      }
      if (fileHash(img.path) !== before) failures.push(`${name} rebase: modified the original`);
    }
    rmSync(cwd, { recursive: true, force: true });
    expect(failures, failures.join('\n')).toEqual([]);
  });
});
