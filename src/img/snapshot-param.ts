// qemu-img's `-l snapshot_param` (measure, convert): "snapshot.id=ID,snapshot.name=NAME" or a
// bare "ID_OR_NAME", and bdrv_snapshot_load_tmp(): view an internal snapshot read-only by
// switching the active L1 table to the snapshot's (block/qcow2-snapshot.c
// qcow2_snapshot_load_tmp). The virtual size stays the image's, as in QEMU.

import type { BlockDevice } from '../block/device.js';
import { CorruptImageError, InvalidArgumentError, NotSupportedError } from '../core/index.js';
import { isQcow2 } from '../image/open.js';
import { MAX_L1_SIZE_BYTES } from '../qcow2/constants.js';
import { bareFlag, optionHelp, QemuOpts, splitOptions } from './qemu-opts.js';

/** Which snapshot: by id and/or name (-l snapshot.id=..,snapshot.name=..) or either. */
export type SnapshotSelector = { id?: string; name?: string } | { idOrName: string };

const SNAPSHOT_OPT_BASE = 'snapshot.';
const INTERNAL_SNAPSHOT_OPTS = [
  { name: 'snapshot.id', type: 'string' as const, help: 'snapshot id' },
  { name: 'snapshot.name', type: 'string' as const, help: 'snapshot name' },
];

/** `-l snapshot.…,help`: the option list to print; qemu-img then fails the command. */
export class SnapshotParamHelp extends InvalidArgumentError {
  readonly help: string;
  constructor(help: string) {
    super('snapshot options requested', { code: 'VMF_SNAPSHOT_PARAM_HELP' });
    this.help = help;
  }
}

/**
 * Parse `-l` as img_measure/img_convert do. Throws InvalidArgumentError with QEMU's message
 * ("Invalid parameter 'x'"; qemu-img then adds "Failed in parsing snapshot param '...'");
 * QEMU's deprecation warnings for bare words go to `onWarning`.
 */
export function parseSnapshotParam(
  text: string,
  onWarning?: (message: string) => void,
): SnapshotSelector {
  if (!text.startsWith(SNAPSHOT_OPT_BASE)) return { idOrName: text };
  const opts = new QemuOpts(INTERNAL_SNAPSHOT_OPTS);
  for (const [rawName, value] of splitOptions(text)) {
    let name = rawName;
    let str = value;
    if (value === undefined) {
      // "help" or "?": qemu_opts_parse_noisily() lists the options instead of parsing.
      if (rawName === 'help' || rawName === '?') {
        throw new SnapshotParamHelp(optionHelp('snapshot', INTERNAL_SNAPSHOT_OPTS));
      }
      // opts_do_parse() with warn_on_flag: a bare word is a deprecated short-form boolean.
      [name, str] = bareFlag(rawName);
      if (onWarning) {
        onWarning(
          `warning: short-form boolean option '${rawName}' deprecated\nPlease use ${name}=${str} instead`,
        );
      }
    }
    opts.set(name, str ?? '');
  }
  const id = opts.str('snapshot.id');
  const name = opts.str('snapshot.name');
  return { ...(id !== undefined ? { id } : {}), ...(name !== undefined ? { name } : {}) };
}

/** find_snapshot_by_id_and_name(): index of the matching snapshot or -1. */
function findSnapshot(
  snapshots: readonly { id: string; name: string }[],
  id: string | undefined,
  name: string | undefined,
): number {
  if (id === undefined && name === undefined) return -1;
  return snapshots.findIndex(
    (sn) => (id === undefined || sn.id === id) && (name === undefined || sn.name === name),
  );
}

/**
 * bdrv_snapshot_load_tmp[_by_id_or_name](): make `dev` (opened read-only) show the snapshot.
 * Errors carry QEMU's text; qemu-img prefixes "Failed to load snapshot: ".
 */
export async function loadSnapshotTmp(dev: BlockDevice, selector: SnapshotSelector): Promise<void> {
  if (!isQcow2(dev)) {
    throw new NotSupportedError(
      `Block format '${dev.format}' used by device '' does not support temporarily loading internal snapshots`,
    );
  }
  if (!dev.readOnly) throw new InvalidArgumentError('Device is not readonly');
  let index: number;
  if ('idOrName' in selector) {
    // By id first, then by name (ENOENT from the first lookup is not an error).
    index = findSnapshot(dev.snapshots, selector.idOrName, undefined);
    if (index < 0) index = findSnapshot(dev.snapshots, undefined, selector.idOrName);
  } else {
    if (selector.id === undefined && selector.name === undefined) {
      throw new InvalidArgumentError('snapshot_id and name are both NULL');
    }
    index = findSnapshot(dev.snapshots, selector.id, selector.name);
  }
  const sn = index < 0 ? undefined : dev.snapshots[index];
  if (!sn) throw new InvalidArgumentError("Can't find snapshot", { code: 'VMF_NO_SNAPSHOT' });

  // qcow2_validate_table(..., L1E_SIZE, QCOW_MAX_L1_SIZE, "Snapshot L1 table")
  if (sn.l1Size > MAX_L1_SIZE_BYTES / 8) throw new CorruptImageError('Snapshot L1 table too large');
  if (
    Number.MAX_SAFE_INTEGER - sn.l1Size * 8 < sn.l1TableOffset ||
    sn.l1TableOffset % dev.layout.clusterSize !== 0
  ) {
    throw new CorruptImageError('Snapshot L1 table offset invalid');
  }
  const bytes = new Uint8Array(sn.l1Size * 8);
  await dev.storage.read(bytes, sn.l1TableOffset);
  const view = new DataView(bytes.buffer);
  const l1 = new Uint32Array(sn.l1Size * 2);
  for (let i = 0; i < l1.length; i++) l1[i] = view.getUint32(i * 4);
  dev.setL1(l1);
}
