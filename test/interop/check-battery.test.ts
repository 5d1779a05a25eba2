// `check` on the hostile-input battery, against qemu-img 7.2: the same diagnostics, JSON and
// exit code without repair, with -r leaks and with -r all; after a repair qemu-img judges
// vmforge's copy as it judges its own and both hold the same guest data.

import { mkdtemp, rm } from 'node:fs/promises';
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
