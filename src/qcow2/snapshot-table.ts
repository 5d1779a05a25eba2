// The internal snapshot table (qcow2.rst "Snapshots"): variable-length entries, each padded to
// 8 bytes. Decoding follows QEMU's qcow2_do_read_snapshots(), including its limits (64 MiB table,
// 1 KiB extra data per entry) and its messages; encode is the exact inverse.

import {
  ByteWriter,
  CorruptImageError,
  decodeByteString,
  encodeByteString,
} from '../core/index.js';
import { MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOTS_SIZE } from './constants.js';

export interface Qcow2Snapshot {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  /** Guest clock in ns; u64, so a BigInt (QEMU prints 2^64-1 exactly). */
  vmClockNsec: bigint;
  /** vm_state_size, widened by the 64-bit extra-data field when present. */
  vmStateSize: number;
  /** Guest disk size at snapshot time (extra data), or the image size if absent. */
  diskSize: number;
  /** Instruction count, or undefined when the entry has none (QEMU's -1). */
  icount: number | undefined;
  extraDataSize: number;
  /** Extra data beyond the 24 bytes vmforge knows, preserved on rewrite. */
  unknownExtraData: Uint8Array;
}

/** Fixed part of an entry (QCowSnapshotHeader). */
const ENTRY_HEADER = 40;
const KNOWN_EXTRA = 24;

export type ReadAt = (offset: number, length: number) => Promise<Uint8Array>;

function cutAtNul(b: Uint8Array): Uint8Array {
  const nul = b.indexOf(0);
  return nul >= 0 ? b.subarray(0, nul) : b;
}

export async function readSnapshotTable(
  readAt: ReadAt,
  tableOffset: number,
  count: number,
  imageSize: number,
): Promise<{ snapshots: Qcow2Snapshot[]; tableSize: number }> {
  const snapshots: Qcow2Snapshot[] = [];
  let offset = tableOffset;
  let tableLength = 0;
  for (let i = 0; i < count; i++) {
    tableLength = Math.ceil(tableLength / 8) * 8;
    offset = Math.ceil(offset / 8) * 8;
    const h = new DataView((await readAt(offset, ENTRY_HEADER)).buffer);
    offset += ENTRY_HEADER;
    const l1TableOffset = Number(h.getBigUint64(0));
    const l1Size = h.getUint32(8);
    const idSize = h.getUint16(12);
    const nameSize = h.getUint16(14);
    const dateSec = h.getUint32(16);
    const dateNsec = h.getUint32(20);
    const vmClockNsec = h.getBigUint64(24);
    let vmStateSize = h.getUint32(32);
    const extraDataSize = h.getUint32(36);
    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw new CorruptImageError(
        `Too much extra metadata in snapshot table entry ${i}\nYou can force-remove this extra metadata with qemu-img check -r all`,
      );
    }
    const known = Math.min(KNOWN_EXTRA, extraDataSize);
    const extra = new DataView((await readAt(offset, KNOWN_EXTRA)).buffer);
    offset += known;
    if (extraDataSize >= 8) vmStateSize = Number(extra.getBigUint64(0));
    const diskSize = extraDataSize >= 16 ? Number(extra.getBigUint64(8)) : imageSize;
    let icount: number | undefined;
    if (extraDataSize >= 24) {
      const v = extra.getBigUint64(16);
      icount = v === 0xffff_ffff_ffff_ffffn ? undefined : Number(v);
    }
    let unknownExtraData = new Uint8Array(0);
    if (extraDataSize > KNOWN_EXTRA) {
      unknownExtraData = (await readAt(offset, extraDataSize - KNOWN_EXTRA)).slice();
      offset += extraDataSize - KNOWN_EXTRA;
    }
    // id and name are C strings to QEMU (strlen when written back, %s when printed).
    const id = decodeByteString(cutAtNul(await readAt(offset, idSize)));
    offset += idSize;
    const name = decodeByteString(cutAtNul(await readAt(offset, nameSize)));
    offset += nameSize;
    tableLength += ENTRY_HEADER + extraDataSize + idSize + nameSize;
    if (tableLength > MAX_SNAPSHOTS_SIZE) {
      throw new CorruptImageError(
        `Snapshot table is too big\nYou can force-remove all ${count - i} overhanging snapshots with qemu-img check -r all`,
      );
    }
    snapshots.push({
      l1TableOffset,
      l1Size,
      id,
      name,
      dateSec,
      dateNsec,
      vmClockNsec,
      vmStateSize,
      diskSize,
      icount,
      extraDataSize,
      unknownExtraData,
    });
  }
  return { snapshots, tableSize: offset - tableOffset };
}

/** Encode the table as QEMU's qcow2_write_snapshots() does (v3 entries carry 24+ bytes of extra data). */
export function encodeSnapshotTable(snapshots: Qcow2Snapshot[]): Uint8Array {
  const enc = { encode: encodeByteString };
  const parts = snapshots.map((sn) => {
    const id = enc.encode(sn.id);
    const name = enc.encode(sn.name);
    const extraSize = KNOWN_EXTRA + sn.unknownExtraData.length;
    const size = Math.ceil((ENTRY_HEADER + extraSize + id.length + name.length) / 8) * 8;
    const w = ByteWriter.alloc(size);
    w.u64(sn.l1TableOffset).u32(sn.l1Size).u16(id.length).u16(name.length);
    w.u32(sn.dateSec).u32(sn.dateNsec).u64(sn.vmClockNsec);
    w.u32(sn.vmStateSize > 0xffff_ffff ? 0 : sn.vmStateSize).u32(extraSize);
    w.u64(sn.vmStateSize)
      .u64(sn.diskSize)
      .u64(sn.icount === undefined ? 0xffff_ffff_ffff_ffffn : sn.icount);
    w.bytes(sn.unknownExtraData).bytes(id).bytes(name);
    return w.buf;
  });
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}
