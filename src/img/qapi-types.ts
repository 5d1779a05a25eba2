// The structured results of qemu-img's inspection commands, mirroring QEMU 7.2's QAPI types
// (qapi/block-core.json, qapi/crypto.json) field for field, with QAPI's own key names.
// Key order in these interfaces is QAPI declaration order, which is the insertion order QEMU's
// visitor uses; src/cli/output re-orders keys the way QEMU's QDict hash table prints them.
// Optional fields are omitted (not undefined) when QEMU would not emit them.

/** SnapshotInfo (block-core.json). */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

/** Qcow2BitmapInfo. */
export interface Qcow2BitmapInfo {
  name: string;
  granularity: number;
  flags: ('in-use' | 'auto')[];
}

/** QCryptoBlockInfoLUKSSlot (crypto.json). */
export interface LuksSlotInfo {
  active: boolean;
  iters?: number;
  stripes?: number;
  'key-offset': number;
}

/** QCryptoBlockInfoLUKS (crypto.json). */
export interface LuksInfo {
  'cipher-alg': string;
  'cipher-mode': string;
  'ivgen-alg': string;
  'ivgen-hash-alg'?: string;
  'hash-alg': string;
  'payload-offset': number;
  'master-key-iters': number;
  uuid: string;
  slots: LuksSlotInfo[];
}

/** ImageInfoSpecificQCow2Encryption: { format: 'aes' } or { format: 'luks', ...LuksInfo }. */
export type Qcow2EncryptionInfo = { format: 'aes' } | ({ format: 'luks' } & LuksInfo);

/** ImageInfoSpecificQCow2. */
export interface ImageInfoSpecificQCow2 {
  compat: string;
  'data-file'?: string;
  'data-file-raw'?: boolean;
  'extended-l2'?: boolean;
  'lazy-refcounts'?: boolean;
  corrupt?: boolean;
  'refcount-bits': number;
  encrypt?: Qcow2EncryptionInfo;
  bitmaps?: Qcow2BitmapInfo[];
  'compression-type': 'zlib' | 'zstd';
}

/** ImageInfoSpecific: a union discriminated by `type`; 7.2 prints {type, data}. */
export type ImageInfoSpecific =
  { type: 'qcow2'; data: ImageInfoSpecificQCow2 } | { type: 'luks'; data: LuksInfo };

/** ImageInfo (7.2; the 8.0 BlockGraphInfo `children` is not emitted). */
export interface ImageInfo {
  filename: string;
  format: string;
  'dirty-flag'?: boolean;
  'actual-size'?: number;
  'virtual-size': number;
  'cluster-size'?: number;
  encrypted?: boolean;
  compressed?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfo[];
  'backing-image'?: ImageInfo;
  'format-specific'?: ImageInfoSpecific;
}

/** ImageCheck. qemu-img emits an optional count only when it is non-zero. */
export interface ImageCheck {
  filename: string;
  format: string;
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

/** MapEntry (qemu-img map prints these by hand, not through QAPI). */
export interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
  depth: number;
  present: boolean;
  offset?: number;
  filename?: string;
}

/**
 * BlockMeasureInfo. Sizes are uint64 in QEMU and can pass 2^53 (measure --size 2E with 2 MiB
 * clusters): such values are bigints, all others plain numbers.
 */
export interface BlockMeasureInfo {
  required: number | bigint;
  'fully-allocated': number | bigint;
  bitmaps?: number | bigint;
}
