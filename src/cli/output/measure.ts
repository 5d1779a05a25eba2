// `qemu-img measure` output (QEMU 7.2 qemu-img.c img_measure / dump_json_block_measure_info).

import type { BlockMeasureInfo } from '../../img/qapi-types.js';
import { BlockMeasureInfoSchema, inQapiOrder } from './qapi-order.js';
import { formatQNum, qemuJson } from './qobject-json.js';

/** QAPI declares the members 'int': a uint64 of 2^63 or more prints as a negative int64. */
function asInt64(v: number | bigint): number | bigint {
  return typeof v === 'bigint' ? BigInt.asIntN(64, v) : v;
}

/** `measure --output=json`: BlockMeasureInfo; `bitmaps` only when the caller sets it. */
export function formatMeasureJson(info: BlockMeasureInfo): string {
  const ints: BlockMeasureInfo = {
    required: asInt64(info.required),
    'fully-allocated': asInt64(info['fully-allocated']),
    ...(info.bitmaps !== undefined ? { bitmaps: asInt64(info.bitmaps) } : {}),
  };
  return qemuJson(inQapiOrder(ints, BlockMeasureInfoSchema));
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
