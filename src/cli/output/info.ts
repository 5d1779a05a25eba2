// `qemu-img info` output (QEMU 7.2): JSON through the QAPI output visitor and
// qobject_to_json_pretty (dump_json_image_info / dump_json_image_info_list in qemu-img.c), and
// human text from bdrv_image_info_dump() and bdrv_image_info_specific_dump() in block/qapi.c.

import { formatSize } from '../../core/units.js';
import type { ImageInfo, ImageInfoSpecific } from '../../img/qapi-types.js';
import { ImageInfoSchema, ImageInfoSpecificSchema, inQapiOrder } from './qapi-order.js';
import { formatQNum, qdictKeys, qemuJson, type QValue } from './qobject-json.js';
import {
  formatSnapshotList,
  snapshotHeaderRow,
  type SnapshotTableOptions,
} from './snapshot-list.js';

export type InfoHumanOptions = SnapshotTableOptions;

/** `info --output=json` for one image: the ImageInfo object, pretty-printed, then "\n". */
export function formatInfoJson(info: ImageInfo): string {
  return qemuJson(inQapiOrder(info, ImageInfoSchema));
}

/** `info --output=json --backing-chain`: always a JSON array, top image first (even of one). */
export function formatInfoChainJson(chain: readonly ImageInfo[]): string {
  return qemuJson(chain.map((info) => inQapiOrder(info, ImageInfoSchema)));
}

/**
 * Human `info` for one image (bdrv_image_info_dump). `backing-image` is not printed (qemu-img
 * never fills it; --backing-chain prints each image in turn, see formatInfoChainHuman).
 */
export function formatInfoHuman(info: ImageInfo, options: InfoHumanOptions = {}): string {
  const diskSize =
    info['actual-size'] === undefined ? 'unavailable' : formatSize(info['actual-size']);
  let out =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${formatSize(info['virtual-size'])} (${formatQNum(info['virtual-size'])} bytes)\n` +
    `disk size: ${diskSize}\n`;
  if (info.encrypted) out += 'encrypted: yes\n';
  if (info['cluster-size'] !== undefined)
    out += `cluster_size: ${formatQNum(info['cluster-size'])}\n`;
  if (info['dirty-flag']) out += 'cleanly shut down: no\n';
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    const full = info['full-backing-filename'];
    out += `backing file: ${backing}`;
    if (full === undefined) out += ' (cannot determine actual path)';
    else if (full !== backing) out += ` (actual path: ${full})`;
    out += '\n';
    const fmt = info['backing-filename-format'];
    if (fmt !== undefined) out += `backing file format: ${fmt}\n`;
  }
  // QEMU leaves `snapshots` out when there are none (has_snapshots = list != NULL); an empty
  // list passed here still prints the title and header row, as bdrv_image_info_dump would.
  if (info.snapshots !== undefined) {
    out += info.snapshots.length
      ? formatSnapshotList(info.snapshots, options)
      : `Snapshot list:\n${snapshotHeaderRow()}\n`;
  }
  if (info['format-specific'] !== undefined) {
    out += `Format specific information:\n${formatSpecificHuman(info['format-specific'])}`;
  }
  return out;
}

/** Human `info --backing-chain`: each image's block, separated by one empty line. */
export function formatInfoChainHuman(
  chain: readonly ImageInfo[],
  options: InfoHumanOptions = {},
): string {
  return chain.map((info) => formatInfoHuman(info, options)).join('\n');
}

/**
 * bdrv_image_info_specific_dump(): the `data` member of the visited ImageInfoSpecific, printed
 * by dump_qobject(1, data) in QDict order with dashes in key names shown as spaces.
 */
export function formatSpecificHuman(spec: ImageInfoSpecific): string {
  const visited = inQapiOrder(spec, ImageInfoSpecificSchema) as Readonly<Record<string, QValue>>;
  const data = visited['data'];
  return data === undefined ? '' : dumpQObject(1, data);
}

/** dump_qobject() of block/qapi.c. Scalars print bare; containers recurse one level deeper. */
export function dumpQObject(indent: number, value: QValue): string {
  if (value === null) return 'null'; // QEMU aborts on QNull; never produced by ImageInfo
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' || typeof value === 'bigint') return formatQNum(value);
  if (typeof value === 'string') return value;
  let out = '';
  const line = (label: string, v: QValue): void => {
    const composite = typeof v === 'object' && v !== null;
    out += `${' '.repeat(indent * 4)}${label}:${composite ? '\n' : ' '}`;
    out += dumpQObject(indent + 1, v);
    if (!composite) out += '\n';
  };
  if (Array.isArray(value)) {
    (value as readonly QValue[]).forEach((v, i) => line(`[${i}]`, v));
  } else {
    const dict = value as Readonly<Record<string, QValue>>;
    for (const key of qdictKeys(dict)) line(key.replaceAll('-', ' '), dict[key]!);
  }
  return out;
}
