// The internal snapshot table of `qemu-img snapshot -l` and human `qemu-img info`:
// bdrv_snapshot_dump() in block/qapi.c and dump_snapshots() in qemu-img.c (QEMU 7.2).

import { byteLength, truncateCString } from '../../core/byte-string.js';
import { printfPad } from '../../core/printf.js';
import { formatSize } from '../../core/units.js';
import type { SnapshotInfo } from '../../img/qapi-types.js';
import { formatQNum } from './qobject-json.js';

export interface SnapshotTableOptions {
  /**
   * IANA time zone for the DATE column. Default: the process's local time zone, which is what
   * QEMU uses (g_date_time_new_from_unix_local honours TZ, else /etc/localtime).
   */
  timeZone?: string;
}

/** The header row, without newline: printf("%-10s%-17s%8s%20s%13s%11s", ...). */
export function snapshotHeaderRow(): string {
  return (
    printfPad('ID', 10, true) +
    printfPad('TAG', 17, true) +
    printfPad('VM SIZE', 8, false) +
    printfPad('DATE', 20, false) +
    printfPad('VM CLOCK', 13, false) +
    printfPad('ICOUNT', 11, false)
  );
}

/**
 * One snapshot row, without newline: printf("%-9s %-16s %8s%20s%13s%11s", id, name,
 * size_to_str(vm_state_size), local "%Y-%m-%d %H:%M:%S", "HH:MM:SS.mmm", icount or "").
 * Widths count bytes and never truncate, so long or multi-byte names push the other columns
 * right exactly as in QEMU. id and name go through QEMUSnapshotInfo's fixed buffers
 * (char id_str[128], char name[256]) first, as bdrv_image_info_dump does with pstrcpy.
 */
export function snapshotRow(sn: SnapshotInfo, options: SnapshotTableOptions = {}): string {
  const id = truncateCString(sn.id, 128);
  const name = truncateCString(sn.name, 256);
  // QEMUSnapshotInfo.vm_clock_nsec = vm-clock-sec * 10^9 + vm-clock-nsec, in uint64 arithmetic.
  const clockNs = BigInt.asUintN(
    64,
    BigInt(sn['vm-clock-sec']) * 1_000_000_000n + BigInt(sn['vm-clock-nsec']),
  );
  const secs = clockNs / 1_000_000_000n;
  const int = (v: bigint): number => Number(BigInt.asIntN(32, v)); // the (int) casts
  const clock =
    `${printf02d(int(secs / 3600n))}:${printf02d(int((secs / 60n) % 60n))}:` +
    `${printf02d(int(secs % 60n))}.${String(int((clockNs / 1_000_000n) % 1000n)).padStart(3, '0')}`;
  const date = formatLocalDate(sn['date-sec'], options.timeZone);
  // has_icount is false when the image stores -1 ("no icount"), and then the column is empty.
  const icount = sn.icount === undefined ? '' : formatQNum(sn.icount);
  return (
    printfPad(id, 9, true, byteLength(id)) +
    ' ' +
    printfPad(name, 16, true, byteLength(name)) +
    ' ' +
    printfPad(formatSize(sn['vm-state-size']), 8, false) +
    printfPad(date, 20, false) +
    printfPad(clock, 13, false) +
    printfPad(icount, 11, false)
  );
}

/** printf("%02d") for an int: zero-padded to two characters, the sign counting as one. */
function printf02d(n: number): string {
  return n < 0 ? `-${String(-n).padStart(1, '0')}` : String(n).padStart(2, '0');
}

/**
 * "Snapshot list:", the header and one row per snapshot, each line ending in "\n"; the empty
 * string when there are none (dump_snapshots prints nothing then). This is all `snapshot -l`
 * prints, and the block human `info` prints when the image has snapshots.
 */
export function formatSnapshotList(
  snapshots: readonly SnapshotInfo[],
  options: SnapshotTableOptions = {},
): string {
  if (snapshots.length === 0) return '';
  let out = `Snapshot list:\n${snapshotHeaderRow()}\n`;
  for (const sn of snapshots) out += `${snapshotRow(sn, options)}\n`;
  return out;
}

const dateFormats = new Map<string, Intl.DateTimeFormat>();

/**
 * g_date_time_format(g_date_time_new_from_unix_local(sec), "%Y-%m-%d %H:%M:%S"). date_sec is
 * a uint32 in QEMUSnapshotInfo, hence the wrap.
 */
export function formatLocalDate(dateSec: number, timeZone?: string): string {
  const ms = (dateSec >>> 0) * 1000;
  let y: number, mo: number, d: number, h: number, mi: number, s: number;
  if (timeZone === undefined) {
    const t = new Date(ms);
    [y, mo, d, h, mi, s] = [
      t.getFullYear(),
      t.getMonth() + 1,
      t.getDate(),
      t.getHours(),
      t.getMinutes(),
      t.getSeconds(),
    ];
  } else {
    let fmt = dateFormats.get(timeZone);
    if (!fmt) {
      fmt = new Intl.DateTimeFormat('en-US', {
        timeZone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
      dateFormats.set(timeZone, fmt);
    }
    const parts = fmt.formatToParts(ms);
    const part = (type: Intl.DateTimeFormatPartTypes): number =>
      Number(parts.find((p) => p.type === type)?.value);
    [y, mo, d, h, mi, s] = [
      part('year'),
      part('month'),
      part('day'),
      part('hour'),
      part('minute'),
      part('second'),
    ];
  }
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${y}-${two(mo)}-${two(d)} ${two(h)}:${two(mi)}:${two(s)}`;
}
