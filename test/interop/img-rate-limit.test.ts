// -r (rate limit) for convert and commit: the result is what qemu-img makes with the same -r, and
// the limit holds. Only a lower bound on the elapsed time is asserted (a limited copy can never
// be faster than its limit, whatever the machine's load), never an upper one.
import { randomBytes } from 'node:crypto';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { binPath, run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const ours = (args: string[], cwd: string) =>
  run(process.execPath, [binPath('vmforge-img'), ...args], { cwd });

async function ok(file: string, args: string[], cwd: string): Promise<void> {
  const r = await run(file, args, { cwd });
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, (performance.now() - t0) / 1000];
}

describeWithTools(['qemu-img', 'qemu-io'], 'qemu-img -r rate limits', () => {
  it('convert -r: the same image as qemu-img, written no faster than the limit', async () => {
    const dir = await tempDir('vmforge-rate-');
    await writeFile(join(dir, 'src.raw'), randomBytes(6 * MiB));
    await ok('qemu-img', ['convert', '-r', '2M', '-O', 'qcow2', 'src.raw', 'q.qcow2'], dir);
    const [r, seconds] = await timed(() =>
      ours(['convert', '-r', '2M', '-O', 'qcow2', 'src.raw', 'v.qcow2'], dir),
    );
    expect(r.code, r.stderr).toBe(0);
    // 6 MiB at 2 MiB/s: the first 2 MiB chunk and a burst of 0.2 MiB go at once (a request
    // starts while the bucket is not over its burst, as in QEMU's throttle), the rest waits:
    // at least (6 - 2 - 0.2) / 2 = 1.9 s.
    expect(seconds).toBeGreaterThan(1.85);
    const cmp = await run('cmp', ['q.qcow2', 'v.qcow2'], { cwd: dir });
    expect(cmp.code, cmp.stdout).toBe(0);
    // Bad values fail as in qemu-img.
    for (const bad of ['-1', 'x']) {
      const theirs = await run('qemu-img', ['convert', '-r', bad, 'src.raw', 'o.raw'], {
        cwd: dir,
      });
      const mine = await ours(['convert', '-r', bad, 'src.raw', 'o.raw'], dir);
      expect(mine.code).toBe(theirs.code);
      expect(mine.stderr).toBe(theirs.stderr.replaceAll('qemu-img', 'vmforge-img'));
    }
  });

  it('commit -r: the same base as qemu-img commit, copied no faster than the limit', async () => {
    const dir = await tempDir('vmforge-rate-commit-');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M'], dir);
    await ok(
      'qemu-img',
      ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
      dir,
    );
    await ok('qemu-io', ['-c', 'write -P 7 0 3M', '-c', 'write -z 5M 1M', 'top.qcow2'], dir);
    for (const f of ['base', 'top']) await cp(join(dir, `${f}.qcow2`), join(dir, `${f}-q.qcow2`));
    await ok('qemu-img', ['rebase', '-u', '-b', 'base-q.qcow2', '-F', 'qcow2', 'top-q.qcow2'], dir);
    await ok('qemu-img', ['commit', '-q', '-r', '1M', 'top-q.qcow2'], dir);
    const [r, seconds] = await timed(() => ours(['commit', '-q', '-r', '1M', 'top.qcow2'], dir));
    expect(r.code, r.stderr).toBe(0);
    // 3 MiB of data and a 1 MiB zero write at 1 MiB/s, the first 2 MiB chunk and 0.1 MiB of
    // burst at once: at least (4 - 2 - 0.1) / 1 = 1.9 s.
    expect(seconds).toBeGreaterThan(1.85);
    const cmp = await run('qemu-img', ['compare', 'base.qcow2', 'base-q.qcow2'], { cwd: dir });
    expect(cmp.stdout, cmp.stderr).toContain('Images are identical.');
    const check = await run('qemu-img', ['check', 'base.qcow2'], { cwd: dir });
    expect(check.stdout).toContain('No errors were found on the image.');
  });
});
