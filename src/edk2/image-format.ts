// Sniffing a firmware file's block format. QEMU loads pflash through the block layer, so code
// and vars may be raw or qcow2 (Fedora ships *.qcow2 firmware); the format is read from the
// file's first bytes, never assumed from its name. Only the fixed qcow2 header fields needed
// here are read (docs/interop/qcow2.txt "Header"): magic, version, backing file, size, crypt.

import { open } from 'node:fs/promises';
import { ByteReader, CorruptImageError, fromSystemError } from '../core/index.js';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export interface SniffedImage {
  format: 'raw' | 'qcow2';
  /** Bytes the guest (the pflash device) sees. */
  virtualSize: number;
  fileSize: number;
  /** qcow2 only. */
  qcow2?: { version: number; hasBackingFile: boolean; encrypted: boolean; clusterBits: number };
}

/** Other image formats QEMU can probe, so a wrong file gets a precise message. */
const OTHER_MAGICS: [Uint8Array, string][] = [
  [new TextEncoder().encode('KDMV'), 'vmdk'],
  [new TextEncoder().encode('vhdxfile'), 'vhdx'],
  [new TextEncoder().encode('conectix'), 'vpc'],
  [new Uint8Array([0x51, 0x46, 0x49, 0x00]), 'qed'],
  [new TextEncoder().encode('<<< Oracle VM VirtualBox Disk Image >>>'), 'vdi'],
];

function startsWith(buf: Uint8Array, magic: Uint8Array): boolean {
  return buf.length >= magic.length && magic.every((b, i) => buf[i] === b);
}

/** Decode the qcow2 header fields we need from its first 72 bytes. */
export function decodeQcow2Peek(
  buf: Uint8Array,
  path: string,
): NonNullable<SniffedImage['qcow2']> & { size: number } {
  const r = new ByteReader(buf, `qcow2 header of '${path}'`);
  r.u32('magic');
  const version = r.u32('version');
  const backingOffset = r.u64big('backing_file_offset');
  r.u32('backing_file_size');
  const clusterBits = r.u32('cluster_bits');
  const size = r.u64('size');
  const crypt = r.u32('crypt_method');
  if (version !== 2 && version !== 3)
    throw new CorruptImageError(`'${path}': unsupported qcow2 version ${version}`);
  if (clusterBits < 9 || clusterBits > 21)
    throw new CorruptImageError(`'${path}': qcow2 cluster_bits is ${clusterBits}, expected 9..21`);
  return {
    version,
    hasBackingFile: backingOffset !== 0n,
    encrypted: crypt !== 0,
    clusterBits,
    size,
  };
}

export async function sniffImage(path: string): Promise<SniffedImage> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fromSystemError(err, `Could not open '${path}'`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CorruptImageError(`'${path}' is not a regular file`);
    const head = new Uint8Array(512);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const buf = head.subarray(0, bytesRead);
    if (bytesRead >= 4 && new DataView(buf.buffer).getUint32(0, false) === QCOW2_MAGIC) {
      const q = decodeQcow2Peek(buf, path);
      const { size, ...qcow2 } = q;
      return { format: 'qcow2', virtualSize: size, fileSize: st.size, qcow2 };
    }
    for (const [magic, name] of OTHER_MAGICS)
      if (startsWith(buf, magic))
        throw new CorruptImageError(
          `'${path}' is a ${name} image; firmware must be a raw or qcow2 file`,
          { code: 'VMF_FW_NOT_FV' },
        );
    return { format: 'raw', virtualSize: st.size, fileSize: st.size };
  } finally {
    await fh.close();
  }
}
