// NBD URIs for openImage(): registers the nbd, nbds, nbd+unix and nbds+unix schemes with
// src/image's protocol table, so every command that opens images by name (vmforge-img info, map,
// convert, ...) accepts an export as source or target. As in QEMU, NBD is the protocol layer:
// the bytes of the export are probed for a format (or -f names one), so a qcow2 file served
// raw is opened as qcow2 over the connection.

import type { BlockDevice } from '../block/device.js';
import { withContext } from '../core/index.js';
import { registerProtocol, type OpenImageOptions } from '../image/open.js';
import { probeFormat } from '../image/probe.js';

export const NBD_SCHEMES = ['nbd', 'nbds', 'nbd+unix', 'nbds+unix'] as const;

/** Open an NBD URI as an image (raw view of the export, or a qcow2 stored in it). */
export async function openNbdImage(uri: string, options: OpenImageOptions): Promise<BlockDevice> {
  const { NbdBlockDevice } = await import('./client-device.js');
  const readOnly = options.readOnly ?? true;
  const dev = await NbdBlockDevice.open(uri, { readOnly });
  try {
    let format: string | undefined = options.format;
    if (format === undefined) {
      const head = new Uint8Array(Math.min(512, dev.size));
      await dev.read(head, 0);
      const probed = probeFormat(head, dev.size, uri);
      format = probed === 'qcow2' ? 'qcow2' : 'raw';
    }
    if (format === 'raw') return dev;
    const [{ openQcow2 }, { openImage }] = await Promise.all([
      import('../qcow2/open.js'),
      import('../image/open.js'),
    ]);
    return await openQcow2(dev.storage, {
      filename: dev.filename,
      readOnly,
      ...(options.backing === 'none'
        ? {}
        : {
            openBacking: async (spec) => {
              try {
                return await openImage(spec.fullName, {
                  ...options,
                  readOnly: true,
                  ...(spec.format === 'raw' || spec.format === 'qcow2'
                    ? { format: spec.format }
                    : {}),
                });
              } catch (err) {
                throw withContext(err, 'Could not open backing file');
              }
            },
          }),
    });
  } catch (err) {
    await dev.close().catch(() => undefined);
    throw err;
  }
}

let registered = false;

/** Make openImage() understand NBD URIs. Idempotent. */
export function registerNbdProtocols(): void {
  if (registered) return;
  registered = true;
  for (const scheme of NBD_SCHEMES) registerProtocol(scheme, openNbdImage);
}
