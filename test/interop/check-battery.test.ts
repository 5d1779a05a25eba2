// `check` on the hostile-input battery, against qemu-img 7.2: the same diagnostics, JSON and
// exit code without repair, with -r leaks and with -r all; after a repair qemu-img judges
// vmforge's copy as it judges its own and both hold the same guest data.

import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkImage } from '../../src/img/check.js';
import {
  corruptImageNames,
  makeCorruptImage,
  type CorruptImage,
} from '../support/corrupt-images.js';
import {
  copyDir,
  expectSameCheck,
  qemuCheck,
  sameBytes,
  vmforgeCheck,
  type Repair,
} from '../support/check-oracle.js';
import { run } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const MODES: Repair[] = [undefined, 'leaks', 'all'];

/**
 * Images whose open fails in both tools with different words, and why. Everything else in the
 * battery must produce qemu-img's exact lines.
 */
const OPEN_MESSAGE_DIFFERS: Record<string, string> = {
  // qemu-img probes a version-1 header as the old "qcow" format and fails in that driver
  // ("Cluster size must be between 512 and 64k"); vmforge has no qcow driver and says so.
  'version-1': "Image format 'qcow' is not supported",
};

describeWithTools(['qemu-img', 'qemu-io'], 'check: hostile-input battery vs qemu-img', () => {
  let root: string;
  let identicalRepairs = 0;
  let repairs = 0;
  const differentRepairs: string[] = [];

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmforge-check-battery-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
    // Not asserted (QEMU's layout after a repair is not a contract), but worth seeing.
    console.log(
      `check battery: ${identicalRepairs}/${repairs} repaired files byte-identical to qemu-img's` +
        (differentRepairs.length ? ` (different: ${differentRepairs.join(', ')})` : ''),
    );
  });

  it(
    'keeps internal snapshots where qemu-img check -r drops them',
    { timeout: 60_000 },
    async () => {
      // An unknown autoclear bit makes the read-write open rewrite the header; QEMU does that in
      // check mode before it has read the snapshot table, writing nb_snapshots = 0.
      const dir = join(root, 'autoclear-snapshot');
      await run('mkdir', ['-p', dir]);
      const sh = (cmd: string, args: string[]) => run(cmd, args, { cwd: dir });
      await sh('qemu-img', ['create', '-q', '-f', 'qcow2', 't.qcow2', '64M']);
      await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 64k', 't.qcow2']);
      await sh('qemu-img', ['snapshot', '-c', 's1', 't.qcow2']);
      const fh = await open(join(dir, 't.qcow2'), 'r+');
      await fh.write(new Uint8Array([0x80]), 0, 1, 88);
      await fh.close();
      await copyDir(dir, `${dir}-q`);
      await copyDir(dir, `${dir}-v`);

      await run('qemu-img', ['check', '-r', 'all', 't.qcow2'], { cwd: `${dir}-q` });
      const qemuList = await sh('qemu-img', ['snapshot', '-l', `${dir}-q/t.qcow2`]);
      expect(qemuList.stdout).not.toContain('s1');

      const out = await checkImage(join(`${dir}-v`, 't.qcow2'), { repair: 'all' });
      expect(out.exitCode).toBe(0);
      expect(out.messages).toEqual([]);
      const ours = await sh('qemu-img', ['snapshot', '-l', `${dir}-v/t.qcow2`]);
      expect(ours.stdout).toContain('s1');
      expect((await qemuCheck(join(`${dir}-v`, 't.qcow2'), undefined)).exitCode).toBe(0);
    },
  );

  for (const name of corruptImageNames()) {
    it(`${name}`, { timeout: 90_000 }, async () => {
      const src = join(root, 'src');
      const img: CorruptImage = await makeCorruptImage(name, src);
      const sub = join(src, name);
      const file = img.path.slice(sub.length + 1);

      if (img.qemuHangs) {
        // qemu-img 7.2 loops forever here; vmforge must refuse promptly, leaving the file alone.
        const before = await import('node:fs/promises').then((fs) => fs.readFile(img.path));
        for (const repair of MODES) {
          await expect(checkImage(img.path, { repair })).rejects.toThrow(/infinite loop/);
        }
        const after = await import('node:fs/promises').then((fs) => fs.readFile(img.path));
        expect(after.equals(before)).toBe(true);
        return;
      }

      for (const repair of MODES) {
        const label = `${name} [${repair ?? 'no repair'}]`;
        const q = join(root, `${name}-${repair ?? 'none'}-q`);
        const v = join(root, `${name}-${repair ?? 'none'}-v`);
        await copyDir(sub, q);
        await copyDir(sub, v);
        const differs = OPEN_MESSAGE_DIFFERS[name];
        if (differs) {
          const qemu = await qemuCheck(join(q, file), repair);
          const vmforge = await vmforgeCheck(join(v, file), repair);
          expect(vmforge.exitCode, label).toBe(qemu.exitCode);
          expect(vmforge.json).toBeUndefined();
          expect(vmforge.stderr.join('\n')).toContain(differs);
          continue;
        }
        await expectSameCheck(join(q, file), join(v, file), repair, label);
        if (!repair) {
          // A check without -r never modifies the image.
          expect(await sameBytes(join(v, file), img.path), `${label}: unmodified`).toBe(true);
        } else if (!img.bigFile) {
          repairs++;
          if (await sameBytes(join(q, file), join(v, file))) identicalRepairs++;
          else differentRepairs.push(label);
        }
        await rm(q, { recursive: true, force: true });
        await rm(v, { recursive: true, force: true });
      }
      await rm(sub, { recursive: true, force: true });
    });
  }
});
