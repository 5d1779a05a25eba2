// convert creates its target without syncing it when the target's writes are never synced
// either (-t unsafe, convert's default): an fdatasync of the empty new image is a journal
// commit that buys nothing (the copied data after it is not flushed). With -t writeback the
// target is flushed when it is closed, as bdrv_close() flushes (qemu-img convert -t writeback
// -O raw makes one fdatasync, at the end; a raw target was not flushed at all before).
import { writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { convertImages } from '../../src/img/convert/index.js';
import { tempDir } from '../support/tmp.js';

/** FileHandle.prototype, whose datasync() every FileStorage flush goes through. */
async function fileHandlePrototype(dir: string): Promise<{ datasync(): Promise<void> }> {
  const fh = await open(join(dir, 'probe'), 'w');
  await fh.close();
  return Object.getPrototypeOf(fh) as { datasync(): Promise<void> };
}

afterEach(() => vi.restoreAllMocks());

describe('convert target creation and flushes', () => {
  for (const format of ['qcow2', 'raw'] as const) {
    it(`${format}: -t unsafe (the default) never syncs the target; -t writeback does`, async () => {
      const dir = await tempDir();
      const source = join(dir, 'source.raw');
      writeFileSync(source, Buffer.alloc(1024 * 1024, 7));
      const datasync = vi.spyOn(await fileHandlePrototype(dir), 'datasync');

      await convertImages({ sources: [source], target: join(dir, 'a'), targetFormat: format });
      expect(datasync).not.toHaveBeenCalled();

      await convertImages({
        sources: [source],
        target: join(dir, 'b'),
        targetFormat: format,
        cache: 'writeback',
      });
      expect(datasync).toHaveBeenCalled();
    });
  }
});
