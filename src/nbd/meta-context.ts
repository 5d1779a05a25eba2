// Metadata context selection for NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT
// (proto.md "Metadata querying"), with qemu's query rules (nbd/server.c nbd_meta_*_query):
//   - "base:allocation" always exists; "qemu:allocation-depth" when the export enables it;
//   - in LIST, an empty leaf ("base:", "qemu:") is a wildcard for its namespace, and no queries
//     at all means every context; in SET an empty leaf selects nothing;
//   - unknown namespaces and unknown leaves are ignored, never errors.

import {
  CONTEXT_ALLOCATION_DEPTH,
  CONTEXT_BASE_ALLOCATION,
  META_ID_ALLOCATION_DEPTH,
  META_ID_BASE_ALLOCATION,
} from './protocol.js';

export interface MetaSelection {
  /** The export the selection was made for (a GO for another export drops it). */
  readonly exportName: string;
  baseAllocation: boolean;
  allocationDepth: boolean;
}

export interface MetaContextInfo {
  id: number;
  name: string;
}

export function emptySelection(exportName: string): MetaSelection {
  return { exportName, baseAllocation: false, allocationDepth: false };
}

/** Select every context the export has (LIST with zero queries). */
export function selectAll(sel: MetaSelection, exportHasDepth: boolean): void {
  sel.baseAllocation = true;
  sel.allocationDepth = exportHasDepth;
}

/** Apply one query to `sel`. `list` is true for LIST_META_CONTEXT (wildcards allowed). */
export function applyQuery(
  sel: MetaSelection,
  query: string,
  list: boolean,
  exportHasDepth: boolean,
): void {
  if (query.startsWith('base:')) {
    const leaf = query.slice(5);
    if (leaf === 'allocation' || (leaf === '' && list)) sel.baseAllocation = true;
    return;
  }
  if (query.startsWith('qemu:')) {
    const leaf = query.slice(5);
    if ((leaf === '' && list) || leaf === 'allocation-depth') {
      sel.allocationDepth = exportHasDepth;
    }
    // qemu:dirty-bitmap:* — vmforge exports no bitmaps, so nothing can match.
  }
}

/** The selected contexts, in qemu's order and with qemu's ids (base 0, depth 1). */
export function selectedContexts(sel: MetaSelection): MetaContextInfo[] {
  const out: MetaContextInfo[] = [];
  if (sel.baseAllocation) out.push({ id: META_ID_BASE_ALLOCATION, name: CONTEXT_BASE_ALLOCATION });
  if (sel.allocationDepth) {
    out.push({ id: META_ID_ALLOCATION_DEPTH, name: CONTEXT_ALLOCATION_DEPTH });
  }
  return out;
}
