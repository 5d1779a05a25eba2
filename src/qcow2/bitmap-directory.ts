// Kept for existing importers (info, check): the bitmap directory codec now lives in
// src/qcow2/bitmaps/directory.ts with the rest of the persistent dirty bitmap code.
export {
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  bitmapFlagNames,
  decodeBitmapDirectory,
  type Qcow2Bitmap,
} from './bitmaps/directory.js';
