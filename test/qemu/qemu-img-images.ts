// DiskImages backed by the real qemu-img, for tests only, until the vmforge qcow2 engine
// (src/qcow2 + src/block/open.ts) is on main and the launcher's default uses it.
import { interimDiskImages, type DiskImages } from '../../src/qemu/index.js';
import { run } from '../support/run.js';

export function qemuImgImages(): DiskImages {
  return {
    probeFormat: interimDiskImages().probeFormat,
    async createOverlay(req) {
      const backing = req.backing.kind === 'file' ? req.backing.path : req.backing.uri;
      const r = await run('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-b',
        backing,
        '-F',
        req.backingFormat,
        req.path,
      ]);
      if (r.code !== 0) throw new Error(`qemu-img create overlay failed: ${r.stderr}`);
    },
  };
}
