// Interrupting convert: SIGKILL at random moments never changes the source; SIGINT stops
// cleanly, exits 130 and leaves no partial target.
import { spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { readFile, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { binPath, run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';

async function sha(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** Run convert; send `signal` `afterMs` after the target file appears (the copy has begun). */
function convertAndSignal(
  dir: string,
  args: string[],
  signal: NodeJS.Signals,
  afterMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [binPath('vmforge-img'), 'convert', ...args], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const target = join(dir, args[args.length - 1]!);
    let t: NodeJS.Timeout | undefined;
    const poll = setInterval(() => {
      access(target).then(
        () => {
          clearInterval(poll);
          t = setTimeout(() => child.kill(signal), afterMs);
        },
        () => undefined,
      );
    }, 5);
    child.on('exit', (code, sig) => {
      clearInterval(poll);
      if (t) clearTimeout(t);
      resolve({ code, signal: sig, stderr });
    });
  });
}

describeWithTools(['qemu-img'], 'interrupting convert', () => {
  it('SIGKILL never changes the source', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'src.raw'), randomBytes(48 * 1024 * 1024));
    await run('qemu-img', ['convert', '-O', 'qcow2', join(dir, 'src.raw'), join(dir, 'src.qcow2')]);
    const before = {
      raw: await sha(join(dir, 'src.raw')),
      qcow2: await sha(join(dir, 'src.qcow2')),
    };
    for (const [i, delay] of [60, 150, 250, 400, 700].entries()) {
      await convertAndSignal(dir, ['-O', 'qcow2', 'src.raw', `out-${i}.qcow2`], 'SIGKILL', delay);
      await convertAndSignal(
        dir,
        ['-c', '-O', 'qcow2', 'src.qcow2', `outc-${i}.qcow2`],
        'SIGKILL',
        delay,
      );
    }
    expect(await sha(join(dir, 'src.raw'))).toBe(before.raw);
    expect(await sha(join(dir, 'src.qcow2'))).toBe(before.qcow2);
    expect((await run('qemu-img', ['check', join(dir, 'src.qcow2')])).code).toBe(0);
  });

  it('SIGINT removes the partial target and exits 130', async () => {
    const dir = await tempDir();
    const text = Buffer.alloc(128 * 1024 * 1024);
    for (let i = 0; i < text.length; i += 4096)
      text.write(`block ${i} of compressible data `.repeat(100), i, 4096);
    await writeFile(join(dir, 'src.raw'), text);
    const before = await sha(join(dir, 'src.raw'));
    // Compressing 128 MiB takes a while: interrupt it shortly after the target appears.
    const r = await convertAndSignal(
      dir,
      ['-c', '-O', 'qcow2', 'src.raw', 'out.qcow2'],
      'SIGINT',
      50,
    );
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain("convert interrupted; removed the partial 'out.qcow2'");
    await expect(access(join(dir, 'out.qcow2'))).rejects.toThrow();
    expect(await sha(join(dir, 'src.raw'))).toBe(before);
  });
});
