// Size parsing and formatting with QEMU's exact rules:
//   parseSize  = qemu_strtosz (util/cutils.c do_strtosz): "64M", "1.5G", "0x1000", "512b"
//   formatSize = size_to_str  (util/cutils.c): "%0.3g %sB" with IEC binary prefixes ("1.5 GiB")

import { InvalidArgumentError } from './errors.js';
import { printfG } from './printf.js';

const SUFFIX_POWER: Record<string, number> = { B: 0, K: 1, M: 2, G: 3, T: 4, P: 5, E: 6 };

export interface ParseSizeOptions {
  /** Scale applied when no suffix is given ('B' = bytes, as qemu_strtosz; 'M' as qemu_strtosz_MiB). */
  defaultSuffix?: 'B' | 'K' | 'M' | 'G';
}

export type ParseSizeResult =
  { ok: true; value: bigint } | { ok: false; reason: 'invalid' | 'range' };

/**
 * qemu_strtosz: decimal with optional fraction and suffix, or hex ("0x..."), non-negative.
 * The result is a BigInt because QEMU accepts up to 2^64-1 before its callers range-check.
 */
export function strtosz(text: string, options: ParseSizeOptions = {}): ParseSizeResult {
  const unit = 1024n;
  const m = /^\s*(\+?)(0[xX][0-9a-fA-F]+|\d+)(\.\d*)?([bBkKmMgGtTpPeE])?$/.exec(text);
  if (!m) return { ok: false, reason: 'invalid' };
  const intPart = m[2]!;
  const frac = m[3];
  const suffix = m[4];
  const hex = /^0[xX]/.test(intPart);
  if (hex && frac !== undefined) return { ok: false, reason: 'invalid' };
  const power = SUFFIX_POWER[(suffix ?? options.defaultSuffix ?? 'B').toUpperCase()]!;
  const mul = unit ** BigInt(power);
  const val = BigInt(intPart);
  let result: bigint;
  if (frac !== undefined && frac.length > 1) {
    // A fraction needs a scale larger than bytes (do_strtosz: "When a fraction is present,
    // a scale is required"). QEMU converts the fraction to 64.64 fixed point and rounds
    // 0.5 upward; exact decimal arithmetic gives the same result for realistic inputs.
    if (mul === 1n) return { ok: false, reason: 'invalid' };
    const digits = frac.slice(1);
    const den = 10n ** BigInt(digits.length);
    const fracVal = BigInt(digits);
    const scaled = fracVal * mul;
    result = val * mul + scaled / den + ((scaled % den) * 2n >= den ? 1n : 0n);
  } else {
    result = val * mul;
  }
  if (result > 0xffff_ffff_ffff_ffffn) return { ok: false, reason: 'range' };
  return { ok: true, value: result };
}

/**
 * Parse a size as qemu-img's cvtnum does: suffixes k/K, M, G, T, P, E are powers of 1024,
 * the result must lie in [min, max] (default [0, INT64_MAX]) and also be a safe integer.
 * `name` appears in the error, e.g. "image size".
 */
export function parseSize(
  text: string,
  name = 'size',
  {
    min = 0,
    max = Number.MAX_SAFE_INTEGER,
    ...options
  }: ParseSizeOptions & { min?: number; max?: number } = {},
): number {
  const r = strtosz(text, options);
  if (!r.ok && r.reason === 'invalid') {
    throw new InvalidArgumentError(
      `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`,
      { code: 'VMF_INVALID_SIZE', details: { text } },
    );
  }
  if (!r.ok || r.value > BigInt(max) || r.value < BigInt(min)) {
    const qemuMax = max === Number.MAX_SAFE_INTEGER ? '9223372036854775807' : String(max);
    throw new InvalidArgumentError(
      `Invalid ${name} specified. Must be between ${min} and ${qemuMax}.`,
      {
        code: 'VMF_INVALID_SIZE',
        details: { text },
      },
    );
  }
  return Number(r.value);
}

const IEC_PREFIX = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** size_to_str(): "0 B", "512 B", "64 KiB", "1.5 GiB", "1e+03 KiB" (sic, %0.3g). */
export function formatSize(bytes: number): string {
  // frexp(val / (1000/1024)) gives the exponent e with 2^(e-1) <= x < 2^e; QEMU then picks
  // the power of 1024 below it so the integer part stays under 1000.
  const x = bytes / (1000 / 1024);
  let e = 0;
  if (x !== 0) e = Math.floor(Math.log2(x)) + 1;
  // Guard log2 rounding at exact powers of two.
  if (x !== 0 && 2 ** (e - 1) > x) e -= 1;
  if (x !== 0 && 2 ** e <= x) e += 1;
  const i = Math.trunc((e - 1) / 10) * 10;
  const div = 2 ** i;
  return `${printfG(bytes / div, 3)} ${IEC_PREFIX[i / 10] ?? ''}B`;
}
