// `vmforge-nbd -L`: list a server's exports, printed exactly as qemu-nbd's qemu_nbd_client_list.

import type { ExportListEntry } from '../../nbd/client-handshake.js';
import { NBD_FLAG_HAS_FLAGS, TRANSMISSION_FLAG_NAMES } from '../../nbd/protocol.js';

export function formatExportList(exports: readonly ExportListEntry[]): string {
  const lines = [`exports available: ${exports.length}`];
  for (const e of exports) {
    lines.push(` export: '${e.name}'`);
    if (e.description) lines.push(`  description: ${e.description}`);
    if (e.flags !== undefined && e.flags & NBD_FLAG_HAS_FLAGS) {
      lines.push(`  size:  ${e.size ?? 0}`);
      const names = TRANSMISSION_FLAG_NAMES.filter(([bit]) => e.flags! & bit).map(
        ([, n]) => ` ${n}`,
      );
      lines.push(`  flags: 0x${e.flags.toString(16)} (${names.join('')} )`);
    }
    if (e.blockSizes && e.blockSizes.minimum) {
      lines.push(`  min block: ${e.blockSizes.minimum}`);
      lines.push(`  opt block: ${e.blockSizes.preferred}`);
      lines.push(`  max block: ${e.blockSizes.maximum}`);
    }
    if (e.contexts.length) {
      lines.push(`  available meta contexts: ${e.contexts.length}`);
      for (const c of e.contexts) lines.push(`   ${c}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
