// src/qcow2: the qcow2 driver (read and write), creation and on-disk codecs.
export { Qcow2Device } from './qcow2-device.js';
export { openQcow2, resolveRelativeTo, type Qcow2OpenOptions, type BackingSpec } from './open.js';
export { createQcow2, validateQcow2CreateOptions, type Qcow2CreateOptions } from './create.js';
export { decodeHeader, encodeHeader, type Qcow2Header } from './header.js';
export type { Qcow2Snapshot } from './snapshot-table.js';
export type { Qcow2Bitmap } from './bitmap-directory.js';
export {
  checkQcow2,
  dirtyImageRepair,
  type Qcow2CheckOptions,
  type Qcow2CheckReport,
} from './check/index.js';
export { DirtyBitmap, PersistentBitmaps, persistentBitmaps, copyBitmaps } from './bitmaps/index.js';
export {
  createSnapshot,
  applySnapshot,
  deleteSnapshot,
  type SnapshotCreateInfo,
} from './snapshots.js';
export { truncateQcow2, type Qcow2TruncateOptions } from './truncate.js';
