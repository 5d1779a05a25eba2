// `qemu-img check` output (QEMU 7.2 qemu-img.c): dump_json_image_check, dump_human_image_check,
// the repair summary img_check prints before re-checking, and its exit-code rule.
//
// Flow the command must follow (img_check): check (repairing with -r); if anything was fixed,
// print formatRepairSummary() (human only), check again WITHOUT repair, and copy the first
// run's corruptions-fixed / leaks-fixed into the second result; then print the result with
// formatCheckHuman / formatCheckJson; then checkOutcome() gives the stderr message and exit code.
// Per-cluster diagnostics ("Leaked cluster 9 refcount=1 reference=0", "ERROR ...") are the
// engine's and go to stderr as they are found, before any of this.

import { printfFixed } from '../../core/printf.js';
import type { ImageCheck } from '../../img/qapi-types.js';
import { ImageCheckSchema, inQapiOrder } from './qapi-order.js';
import { formatQNum, qemuJson } from './qobject-json.js';

/**
 * `check --output=json`. QEMU emits each optional count only when it is non-zero
 * (collect_image_check sets has_x = x != 0); pass them that way, or use imageCheckFromCounts.
 */
export function formatCheckJson(check: ImageCheck): string {
  return qemuJson(inQapiOrder(check, ImageCheckSchema));
}

/** The counts bdrv_check() produces, all present. */
export interface CheckCounts {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
}

/** collect_image_check(): an ImageCheck with every zero count left out. */
export function imageCheckFromCounts(filename: string, format: string, c: CheckCounts): ImageCheck {
  const check: ImageCheck = { filename, format, 'check-errors': c.checkErrors };
  const opt = (
    key: Exclude<keyof ImageCheck, 'filename' | 'format' | 'check-errors'>,
    v: number,
  ): void => {
    if (v !== 0) check[key] = v;
  };
  opt('image-end-offset', c.imageEndOffset);
  opt('corruptions', c.corruptions);
  opt('leaks', c.leaks);
  opt('corruptions-fixed', c.corruptionsFixed);
  opt('leaks-fixed', c.leaksFixed);
  opt('total-clusters', c.totalClusters);
  opt('allocated-clusters', c.allocatedClusters);
  opt('fragmented-clusters', c.fragmentedClusters);
  opt('compressed-clusters', c.compressedClusters);
  return check;
}

/** dump_human_image_check(): the summary on stdout. */
export function formatCheckHuman(check: ImageCheck): string {
  const corruptions = check.corruptions ?? 0;
  const leaks = check.leaks ?? 0;
  const errors = check['check-errors'];
  let out = '';
  if (!(corruptions || leaks || errors)) {
    out += 'No errors were found on the image.\n';
  } else {
    if (corruptions) {
      out +=
        `\n${formatQNum(corruptions)} errors were found on the image.\n` +
        'Data may be corrupted, or further writes to the image may corrupt it.\n';
    }
    if (leaks) {
      out +=
        `\n${formatQNum(leaks)} leaked clusters were found on the image.\n` +
        'This means waste of disk space, but no harm to data.\n';
    }
    if (errors) out += `\n${formatQNum(errors)} internal errors have occurred during the check.\n`;
  }
  const total = check['total-clusters'] ?? 0;
  const allocated = check['allocated-clusters'] ?? 0;
  if (total !== 0 && allocated !== 0) {
    // "%0.2f%%" of doubles computed exactly as C does (x * 100.0 / y).
    const pct = (n: number, d: number): string => printfFixed((n * 100.0) / d, 2);
    out +=
      `${formatQNum(allocated)}/${formatQNum(total)} = ${pct(allocated, total)}% allocated, ` +
      `${pct(check['fragmented-clusters'] ?? 0, allocated)}% fragmented, ` +
      `${pct(check['compressed-clusters'] ?? 0, allocated)}% compressed clusters\n`;
  }
  const end = check['image-end-offset'] ?? 0;
  if (end) out += `Image end offset: ${formatQNum(end)}\n`;
  return out;
}

/** What img_check prints (human output only) after a repair, before checking again. */
export function formatRepairSummary(leaksFixed: number, corruptionsFixed: number): string {
  return (
    'The following inconsistencies were found and repaired:\n\n' +
    `    ${formatQNum(leaksFixed)} leaked clusters\n` +
    `    ${formatQNum(corruptionsFixed)} corruptions\n\n` +
    'Double checking the fixed image now...\n'
  );
}

/**
 * img_check's exit status once the result is printed: 1 with "Check failed" on stderr when
 * the check had internal errors, 2 for corruptions, 3 for leaks only, else 0. (A check that
 * fails outright prints "Check failed: <strerror>" and exits 1; a format without a check
 * prints "This image format does not support checks" and exits 63; both print no result.)
 */
export function checkOutcome(check: ImageCheck): { exitCode: 0 | 1 | 2 | 3; error?: string } {
  if (check['check-errors']) return { exitCode: 1, error: 'Check failed' };
  if (check.corruptions) return { exitCode: 2 };
  if (check.leaks) return { exitCode: 3 };
  return { exitCode: 0 };
}
