// Reading `qemu-img check` output after a crash: which findings are harmless and which are not.

/**
 * The dangerous findings in `qemu-img check` output: any ERROR other than OFLAG_COPIED, and
 * OFLAG_COPIED set on a cluster whose refcount > 1 is not explained by leaked references.
 */
export function dangerousFindings(text: string, clusterSize: number): string[] {
  const leaked = new Set<number>();
  for (const m of text.matchAll(/^Leaked cluster (\d+) refcount=\d+ reference=\d+$/gm)) {
    leaked.add(Number(m[1]));
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('ERROR')) continue;
    const data = /^ERROR OFLAG_COPIED data cluster: l2_entry=([0-9a-f]+) refcount=(\d+)$/.exec(
      line,
    );
    const l2 =
      /^ERROR OFLAG_COPIED L2 cluster: l1_index=\d+ l1_entry=([0-9a-f]+) refcount=(\d+)$/.exec(
        line,
      );
    const m = data ?? l2;
    if (!m) {
      out.push(line);
      continue;
    }
    const entry = BigInt(`0x${m[1]!}`);
    const copied = (entry & (1n << 63n)) !== 0n;
    const cluster = Number((entry & 0x00ff_ffff_ffff_fe00n) / BigInt(clusterSize));
    // COPIED missing: writes copy instead of writing in place; harmless.
    if (copied && !leaked.has(cluster)) out.push(line);
  }
  return out;
}
