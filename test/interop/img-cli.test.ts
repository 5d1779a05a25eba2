// vmforge-img against qemu-img 7.2 on the same files: `info`, `info --backing-chain`, `map`
// (human and JSON) and `snapshot -l` must print the same bytes on stdout and stderr (with the
// tool name swapped) and exit with the same status. The images are the qemu-img/qemu-io corpus of
// test/support/qemu-img-corpus.ts; commands that need QEMU's --object secrets are left out
// (vmforge refuses --object with a clear message, tested separately).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  buildCorpus,
  runCorpusCommand,
  type Corpus,
  type CorpusCommand,
} from '../support/qemu-img-corpus.js';
import { describeWithTools } from '../support/tools.js';
import { binPath } from '../support/run.js';

function runVmforge(
  corpus: Corpus,
  cmd: CorpusCommand,
): { code: number; stdout: Buffer; stderr: Buffer } {
  try {
    const stdout = execFileSync(process.execPath, [binPath('vmforge-img'), ...cmd.args], {
      cwd: corpus.dir,
      env: { ...process.env, LC_ALL: 'C', TZ: cmd.tz },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr: Buffer.alloc(0) };
  } catch (err) {
    const e = err as { status?: number | null; stdout?: Buffer; stderr?: Buffer };
    if (typeof e.status !== 'number') throw err;
    return {
      code: e.status,
      stdout: e.stdout ?? Buffer.alloc(0),
      stderr: e.stderr ?? Buffer.alloc(0),
    };
  }
}

const COMPARED = new Set(['info', 'info-chain', 'map', 'snapshot-list']);

describeWithTools(['qemu-img', 'qemu-io'], 'vmforge-img matches qemu-img 7.2 byte for byte', () => {
  let corpus: Corpus;
  let dir: string | undefined;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmforge-imgcli-'));
    corpus = buildCorpus(dir);
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs every comparable corpus command identically', () => {
    const commands = corpus.commands.filter(
      (c) =>
        COMPARED.has(c.kind) && !c.args.includes('--object') && !c.args.includes('--image-opts'),
    );
    expect(commands.length).toBeGreaterThan(40);
    const failures: string[] = [];
    for (const cmd of commands) {
      const q = runCorpusCommand(corpus, cmd);
      const v = runVmforge(corpus, cmd);
      const qErr = q.stderr.toString('latin1').replaceAll('qemu-img:', 'vmforge-img:');
      const vErr = v.stderr.toString('latin1');
      if (q.code !== v.code || Buffer.compare(q.stdout, v.stdout) !== 0 || qErr !== vErr) {
        failures.push(
          `${cmd.label} [qemu-img ${cmd.args.join(' ')}]\n  exit ${q.code} vs ${v.code}\n` +
            `  qemu stdout: ${JSON.stringify(q.stdout.toString('latin1').slice(0, 600))}\n` +
            `  ours stdout: ${JSON.stringify(v.stdout.toString('latin1').slice(0, 600))}\n` +
            `  qemu stderr: ${JSON.stringify(qErr)}\n  ours stderr: ${JSON.stringify(vErr)}`,
        );
      }
    }
    expect(failures, failures.join('\n')).toEqual([]);
  });
});
