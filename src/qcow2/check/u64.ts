// 64-bit values as the check sees them. Table entries are read as two 32-bit halves (hot loops
// never allocate BigInts); offsets beyond 2^53 only occur in corrupt images and are carried as
// BigInt so the messages print them exactly, as QEMU's PRIx64 does.

const TWO32 = 0x1_0000_0000;

/** A u64 from its halves: a number when exact, else a bigint. */
export function u64(hi: number, lo: number): number | bigint {
  if (hi < 0x20_0000) return hi * TWO32 + lo;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

export function toBig(v: number | bigint): bigint {
  return typeof v === 'bigint' ? v : BigInt(v);
}

/** A u64 bigint as a number when exact, else the bigint. */
export function fromBig(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** PRIx64 of the halves. */
export function hex64(hi: number, lo: number): string {
  if (hi === 0) return (lo >>> 0).toString(16);
  return (hi >>> 0).toString(16) + (lo >>> 0).toString(16).padStart(8, '0');
}

/** PRIx64 of a value. */
export function hex(v: number | bigint): string {
  return v.toString(16);
}

/** "%#" PRIx64: like PRIx64 with a 0x prefix, except that zero prints as "0". */
export function altHex(v: number | bigint): string {
  return v === 0 || v === 0n ? '0' : `0x${v.toString(16)}`;
}

/** The signed interpretation of a u64 (QEMU passes u64 fields to int64_t parameters). */
export function asInt64(v: bigint): bigint {
  return v >= 1n << 63n ? v - (1n << 64n) : v;
}
