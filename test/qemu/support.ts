// Test doubles for the launcher's providers, for unit tests of command construction only
// (interop tests use the real Debian firmware, the vmforge image engine and real QEMU).
import { join } from 'node:path';
import type { HugepageBackendRequest, LaunchProviders, QomObject } from '../../src/qemu/index.js';

export const FAKE_RUN_DIR = '/run/vmforge-test';

function fakeHugepageBackend(req: HugepageBackendRequest): QomObject {
  const o: QomObject =
    req.backend === 'file'
      ? {
          'qom-type': 'memory-backend-file',
          id: req.id,
          size: req.size,
          'mem-path': req.mount ?? '/dev/hugepages',
        }
      : {
          'qom-type': 'memory-backend-memfd',
          id: req.id,
          size: req.size,
          hugetlb: true,
          hugetlbsize: req.pageSize,
        };
  if (req.share) o['share'] = true;
  if (req.prealloc) o['prealloc'] = true;
  if (req.hostNodes) o['host-nodes'] = req.hostNodes;
  if (req.policy) o['policy'] = req.policy;
  return o;
}

export function fakeProviders(): LaunchProviders {
  return {
    firmware: {
      locate: (req) =>
        Promise.resolve({
          code: req.code ?? `/fw/${req.arch}${req.secureBoot ? '-secure' : ''}-code.fd`,
          vars: join(req.outDir, 'VARS.fd'),
          format: 'raw',
        }),
      prepare(req) {
        return this.locate(req);
      },
    },
    hugepages: { planBackends: (reqs) => Promise.resolve(reqs.map(fakeHugepageBackend)) },
    images: {
      probeFormat: (path) => Promise.resolve(path.endsWith('.qcow2') ? 'qcow2' : 'raw'),
      createOverlay: () => Promise.resolve(),
    },
  };
}
