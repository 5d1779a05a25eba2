// Metadata context selection for NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT
// (proto.md "Metadata querying"), with qemu's query rules (nbd/server.c nbd_meta_*_query):
//   - "base:allocation" always exists; "qemu:allocation-depth" when the export enables it;
//     "qemu:dirty-bitmap:NAME" for each bitmap the export offers (qemu-nbd -B);
//   - in LIST, an empty leaf ("base:", "qemu:", "qemu:dirty-bitmap:") is a wildcard for its
//     namespace, and no queries at all means every context; in SET an empty leaf selects nothing;
//   - unknown namespaces and unknown leaves are ignored, never errors.

import {
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  CONTEXT_DIRTY_BITMAP_PREFIX,
  META_ID_ALLOCATION_DEPTH,
  META_ID_BASE_ALLOCATION,
  META_ID_DIRTY_BITMAP,
} from './protocol.js';

/** What an export offers, as far as metadata contexts go. */
export interface MetaExport {
  readonly allocationDepth: boolean;
  /** The exported bitmaps, in id order (the i-th has id META_ID_DIRTY_BITMAP + i). */
  readonly bitmaps: readonly { readonly name: string }[];
}

export interface MetaSelection {
  /** The export the selection was made for (a GO for another export drops it). */
  readonly exportName: string;
  baseAllocation: boolean;
  allocationDepth: boolean;
  /** Per exported bitmap (same index as MetaExport.bitmaps): selected. */
  bitmaps: boolean[];
}

export interface MetaContextInfo {
  id: number;
  name: string;
}

export function emptySelection(exportName: string, exp: MetaExport): MetaSelection {
  return {
    exportName,
    baseAllocation: false,
    allocationDepth: false,
    bitmaps: exp.bitmaps.map(() => false),
  };
}

/** Select every context the export has (LIST with zero queries). */
export function selectAll(sel: MetaSelection, exp: MetaExport): void {
  sel.baseAllocation = true;
  sel.allocationDepth = exp.allocationDepth;
  sel.bitmaps.fill(true);
}

/** Apply one query to `sel`. `list` is true for LIST_META_CONTEXT (wildcards allowed). */
export function applyQuery(
  sel: MetaSelection,
  query: string,
  list: boolean,
  exp: MetaExport,
): void {
  if (query.startsWith('base:')) {
    const leaf = query.slice(5);
    if (leaf === 'allocation' || (leaf === '' && list)) sel.baseAllocation = true;
    return;
  }
  if (!query.startsWith('qemu:')) return;
  const leaf = query.slice(5);
  if (leaf === '') {
    if (list) {
      sel.allocationDepth = exp.allocationDepth;
      sel.bitmaps.fill(true);
    }
    return;
  }
  if (leaf === 'allocation-depth') {
    sel.allocationDepth = exp.allocationDepth;
    return;
  }
  if (query.startsWith(CONTEXT_DIRTY_BITMAP_PREFIX)) {
    const name = query.slice(CONTEXT_DIRTY_BITMAP_PREFIX.length);
    if (name === '') {
      if (list) sel.bitmaps.fill(true);
      return;
    }
    // The first bitmap of that name (qemu-nbd accepts the same -B twice; only one matches).
    const i = exp.bitmaps.findIndex((b) => b.name === name);
    if (i >= 0) sel.bitmaps[i] = true;
  }
}

/** The selected contexts, in qemu's order and with qemu's ids (base 0, depth 1, bitmaps 2+i). */
export function selectedContexts(sel: MetaSelection, exp: MetaExport): MetaContextInfo[] {
  const out: MetaContextInfo[] = [];
  if (sel.baseAllocation) out.push({ id: META_ID_BASE_ALLOCATION, name: CONTEXT_BASE_ALLOCATION });
  if (sel.allocationDepth) {
    out.push({ id: META_ID_ALLOCATION_DEPTH, name: CONTEXT_ALLOCATION_DEPTH });
  }
  exp.bitmaps.forEach((b, i) => {
    if (sel.bitmaps[i]) {
      out.push({ id: META_ID_DIRTY_BITMAP + i, name: CONTEXT_DIRTY_BITMAP_PREFIX + b.name });
    }
  });
  return out;
}
