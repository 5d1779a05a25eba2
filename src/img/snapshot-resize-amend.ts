// Public library surface of qemu-img snapshot / resize / amend (one export line in src/index.ts).
export {
  createImageSnapshot,
  applyImageSnapshot,
  deleteImageSnapshot,
  listImageSnapshots,
  type ImageSnapshotOptions,
} from './snapshot.js';
export { resizeImage, parseResizeSize, type ResizeRequest, type ResizeResult } from './resize.js';
export {
  amendImage,
  amendOptionHelp,
  parseAmendOptions,
  QCOW2_AMEND_OPTS,
  type AmendRequest,
} from './amend.js';
export { amendQcow2, type Qcow2AmendOptions } from '../qcow2/amend.js';
export { changeRefcountOrder } from '../qcow2/refcount-order.js';
