// rebase and commit against qemu-img 7.2: the same operation on identical copies gives the same
// guest-visible content for every image of the chain, the same `qemu-img info --output=json`
// (actual-size aside), clean `qemu-img check`, and the same stdout/stderr/exit code.
import { cp, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { binPath, run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';

async function q(dir: string, args: string[]): Promise<void> {
  const r = await run('qemu-img', args, { cwd: dir });
  if (r.code !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
}
async function io(dir: string, image: string, cmds: string[]): Promise<void> {
  const r = await run('qemu-io', [...cmds.flatMap((c) => ['-c', c]), image], { cwd: dir });
  if (r.code !== 0) throw new Error(`qemu-io: ${r.stdout}${r.stderr}`);
}

/** base (raw or qcow2) <- mid <- top, plus an unrelated image `other`. */
async function makeChain(dir: string, baseFormat: 'raw' | 'qcow2', topSize = '16M'): Promise<void> {
  await q(dir, ['create', '-q', '-f', baseFormat, `base.${baseFormat}`, '16M']);
  await io(dir, `base.${baseFormat}`, ['write -P 1 0 16M']);
  await q(dir, [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    `base.${baseFormat}`,
    '-F',
    baseFormat,
    'mid.qcow2',
  ]);
  await io(dir, 'mid.qcow2', ['write -P 2 4M 4M', 'write -z 9M 64k']);
  await q(dir, [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    'mid.qcow2',
    '-F',
    'qcow2',
    'top.qcow2',
    topSize,
  ]);
  await io(dir, 'top.qcow2', [
    'write -P 3 1M 64k',
    'write -z 10M 128k',
    'write -P 4 5M 512',
    'write -P 5 15M 1M',
  ]);
  await q(dir, ['create', '-q', '-f', 'qcow2', 'other.qcow2', '16M']);
  await io(dir, 'other.qcow2', ['write -P 6 2M 6M']);
}

async function snapshot(dir: string, files: string[]): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const f of files) {
    const raw = join(dir, `${f}.content`);
    await q(dir, ['convert', '-O', 'raw', f, raw]);
    const info = JSON.parse(
      (await run('qemu-img', ['info', '--output=json', f], { cwd: dir })).stdout,
    ) as Record<string, unknown>;
    delete info['actual-size'];
    out[f] = {
      content: (await readFile(raw)).toString('base64').length + ':' + hash(await readFile(raw)),
      info,
    };
    if (f.endsWith('.qcow2')) {
      const chk = await run('qemu-img', ['check', f], { cwd: dir });
      out[`${f} check`] = chk.code;
    }
  }
  return out;
}

function hash(b: Buffer): string {
  let h = 0;
  for (let i = 0; i < b.length; i += 997) h = (h * 31 + b[i]!) >>> 0;
  return `${b.length}/${h}`;
}

interface Case {
  name: string;
  args: string[];
  base?: 'raw' | 'qcow2';
  topSize?: string;
}

const cases: Case[] = [
  {
    name: 'rebase onto another image',
    args: ['rebase', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'],
  },
  {
    name: 'rebase onto the base further down the chain',
    args: ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
  },
  {
    name: 'rebase onto a raw base further down',
    args: ['rebase', '-b', 'base.raw', '-F', 'raw', 'top.qcow2'],
    base: 'raw',
  },
  { name: 'rebase to no backing file', args: ['rebase', '-b', '', 'top.qcow2'] },
  { name: 'rebase -u', args: ['rebase', '-u', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'] },
  { name: 'rebase without -F', args: ['rebase', '-b', 'other.qcow2', 'top.qcow2'] },
  { name: 'rebase without -b', args: ['rebase', 'top.qcow2'] },
  {
    name: 'rebase onto a missing file',
    args: ['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2'],
  },
  { name: 'commit into the backing file', args: ['commit', 'top.qcow2'] },
  { name: 'commit -d', args: ['commit', '-d', 'top.qcow2'] },
  { name: 'commit -b base (two levels)', args: ['commit', '-b', 'base.qcow2', 'top.qcow2'] },
  { name: 'commit into a raw base', args: ['commit', '-b', 'base.raw', 'top.qcow2'], base: 'raw' },
  {
    name: 'commit of a larger overlay grows the base',
    args: ['commit', 'top.qcow2'],
    topSize: '24M',
  },
  { name: 'commit -b not in the chain', args: ['commit', '-b', 'other.qcow2', 'top.qcow2'] },
  { name: 'commit without backing file', args: ['commit', 'other.qcow2'] },
];

describeWithTools(['qemu-img', 'qemu-io'], 'rebase and commit match qemu-img', () => {
  it.each(cases)('$name', async (c) => {
    const root = await tempDir();
    const refDir = join(root, 'ref');
    const ourDir = join(root, 'our');
    await mkdir(refDir);
    await makeChain(refDir, c.base ?? 'qcow2', c.topSize);
    await cp(refDir, ourDir, { recursive: true });
    const files = ['top.qcow2', 'mid.qcow2', `base.${c.base ?? 'qcow2'}`, 'other.qcow2'];
    const ref = await run('qemu-img', c.args, { cwd: refDir });
    const ours = await run(process.execPath, [binPath('vmforge-img'), ...c.args], { cwd: ourDir });
    expect(ours.code, ours.stderr).toBe(ref.code);
    expect(ours.stdout).toBe(ref.stdout);
    expect(ours.stderr).toBe(ref.stderr.replaceAll('qemu-img', 'vmforge-img'));
    const [a, b] = [await snapshot(refDir, files), await snapshot(ourDir, files)];
    expect(b).toEqual(a);
  });
});
