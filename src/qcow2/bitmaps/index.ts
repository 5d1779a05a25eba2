// Persistent dirty bitmaps of qcow2 images (qcow2.rst "Bitmaps"; QEMU block/qcow2-bitmap.c).
export { DirtyBitmap, type DirtyBitmapInit } from './dirty-bitmap.js';
export {
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  bitmapFlagNames,
  decodeBitmapDirectory,
  encodeBitmapDirectory,
  type Qcow2Bitmap,
} from './directory.js';
export { decodeBitmapTable, encodeBitmapTable } from './table.js';
export { readBitmapList } from './io.js';
export {
  PersistentBitmaps,
  persistentBitmaps,
  mergeInto,
  defaultGranularity,
  generatedNodeName,
  INCONSISTENT_HINT,
  type AddBitmapOptions,
} from './persistent-bitmaps.js';
export { checkBitmapsCopyable, checkBitmapsTarget, copyBitmaps } from './copy.js';
