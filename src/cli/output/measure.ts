// `qemu-img measure` output (QEMU 7.2 qemu-img.c img_measure / dump_json_block_measure_info).

import type { BlockMeasureInfo } from '../../img/qapi-types.js';
import { BlockMeasureInfoSchema, inQapiOrder } from './qapi-order.js';
import { formatQNum, qemuJson } from './qobject-json.js';

/** `measure --output=json`: BlockMeasureInfo; `bitmaps` only when the caller sets it. */
export function formatMeasureJson(info: BlockMeasureInfo): string {
  return qemuJson(inQapiOrder(info, BlockMeasureInfoSchema));
}

/**
 * Human `measure`: "required size: N", "fully allocated size: N" and, when `bitmaps` is set
 * (source and target formats both support persistent bitmaps), "bitmaps size: N".
 */
export function formatMeasureHuman(info: BlockMeasureInfo): string {
  let out =
    `required size: ${formatQNum(info.required)}\n` +
    `fully allocated size: ${formatQNum(info['fully-allocated'])}\n`;
  if (info.bitmaps !== undefined) out += `bitmaps size: ${formatQNum(info.bitmaps)}\n`;
  return out;
}
