// src/img: the operations behind qemu-img's subcommands, as library calls (no printing).
// measure, compare and dd; -l snapshot selection; QEMU's block-status view of an image.
export {
  measureImage,
  measureQcow2,
  measureRaw,
  qcow2CalcPreallocSize,
  qcow2RefcountMetadataSize,
  persistentBitmapsSize,
  MeasureOptionsError,
  MeasureStatusError,
  type MeasureOptions,
  type MeasureRequest,
  type Qcow2MeasureOptions,
} from './measure.js';
export {
  compareImages,
  CompareError,
  COMPARE_CHUNK,
  type CompareOptions,
  type CompareProgress,
  type CompareResult,
} from './compare.js';
export { ddImage, ddExtent, DdIoError, type DdOptions, type DdResult } from './dd.js';
export {
  parseSnapshotParam,
  loadSnapshotTmp,
  SnapshotParamHelp,
  type SnapshotSelector,
} from './snapshot-param.js';
export { blockStatusAbove, qemuLength, type QemuBlockStatus } from './qemu-block-status.js';
export type { BlockMeasureInfo } from './qapi-types.js';
export {
  convertImages,
  validateConvertOptions,
  type ConvertOptions,
  type CacheMode,
} from './convert/index.js';
export { commitImage, type CommitOptions } from './commit.js';
export { rebaseImage, type RebaseOptions } from './rebase.js';
export {
  bitmapImage,
  validateBitmapOptions,
  type BitmapAction,
  type BitmapOptions,
} from './bitmap.js';
export { describeImage, imageInfo, imageInfoChain, type InfoOptions } from './info.js';
export { mapImage, type MapOptions } from './map.js';
