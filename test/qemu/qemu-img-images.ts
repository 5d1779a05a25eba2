// DiskImages whose overlays the real qemu-img makes: for tests of overlays over NBD, until
// vmforge's NBD client (src/nbd) lets the vmforge engine open an nbd:// backing file.
import { engineDiskImages, type DiskImages } from '../../src/qemu/index.js';
import { run } from '../support/run.js';

export function qemuImgImages(): DiskImages {
  return {
    probeFormat: engineDiskImages().probeFormat,
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
