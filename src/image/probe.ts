// Format probing as QEMU does it (block.c find_image_format / bdrv_probe_all): read the first
// 512 bytes and ask each format. vmforge implements raw and qcow2; images in other formats QEMU
// knows are recognised so they are reported by name instead of silently opened as raw.

import { readU32BE } from '../core/index.js';

export type ProbedFormat =
  | 'raw'
  | 'qcow2'
  | 'qcow'
  | 'vmdk'
  | 'vdi'
  | 'vpc'
  | 'vhdx'
  | 'qed'
  | 'luks'
  | 'parallels'
  | 'bochs'
  | 'cloop'
  | 'dmg';

const ascii = (buf: Uint8Array, off: number, text: string) =>
  text.split('').every((ch, i) => buf[off + i] === ch.charCodeAt(0));

/** The format QEMU would pick for a file whose first bytes are `head` (up to 512 bytes). */
export function probeFormat(head: Uint8Array, fileSize: number, filename = ''): ProbedFormat {
  if (fileSize === 0) return 'raw';
  if (head.length >= 8 && readU32BE(head, 0) === 0x514649fb) {
    const version = readU32BE(head, 4);
    return version >= 2 ? 'qcow2' : 'qcow';
  }
  if (ascii(head, 0, 'KDMV') || ascii(head, 0, 'COWD') || ascii(head, 0, '# Disk DescriptorFile'))
    return 'vmdk';
  if (head.length >= 0x44 && readU32BE(head, 0x40) === 0x7f10dabe) return 'vdi';
  if (ascii(head, 0, 'conectix')) return 'vpc';
  if (ascii(head, 0, 'vhdxfile')) return 'vhdx';
  if (ascii(head, 0, 'QED\u0000')) return 'qed';
  if (head.length >= 6 && ascii(head, 0, 'LUKS') && head[4] === 0xba && head[5] === 0xbe)
    return 'luks';
  if (ascii(head, 0, 'WithoutFreeSpace') || ascii(head, 0, 'WithouFreSpacExt')) return 'parallels';
  if (ascii(head, 0, 'Bochs Virtual HD Image')) return 'bochs';
  if (ascii(head, 0, '#!/bin/sh\n#V2.0 Format\n')) return 'cloop';
  if (filename.endsWith('.dmg')) return 'dmg';
  return 'raw';
}
