// C printf's %.Nf and %.Ng for doubles, rounded exactly as glibc does it.
// JavaScript's toFixed() rounds exact ties away from zero (0.125 -> "0.13") while glibc
// rounds the exact binary value half-to-even ("0.12"). qemu-img prints sizes with "%0.3g"
// and check percentages with "%.2f", so byte-identical output needs exact decimal rounding.

/** The exact value of a finite non-negative double as mantissa * 2^exp2 (BigInt mantissa). */
function decompose(x: number): { mant: bigint; exp2: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  const fracHi = hi & 0xfffff;
  let mant = (BigInt(fracHi) << 32n) | BigInt(lo);
  let exp2: number;
  if (biased === 0) {
    exp2 = -1074; // subnormal
  } else {
    mant |= 1n << 52n;
    exp2 = biased - 1075;
  }
  return { mant, exp2 };
}

/** round(x * 10^scale) with ties to even, computed exactly. x must be finite and >= 0. */
function scaledRound(x: number, scale: number): bigint {
  const { mant, exp2 } = decompose(x);
  let num = mant;
  let den = 1n;
  if (exp2 >= 0) num <<= BigInt(exp2);
  else den <<= BigInt(-exp2);
  if (scale >= 0) num *= 10n ** BigInt(scale);
  else den *= 10n ** BigInt(-scale);
  const q = num / den;
  const r2 = (num % den) * 2n;
  if (r2 > den || (r2 === den && q % 2n === 1n)) return q + 1n;
  return q;
}

/** Sign of x - 10^k, computed exactly. x must be finite and > 0. */
function comparePow10(x: number, k: number): number {
  const { mant, exp2 } = decompose(x);
  let lhs = mant;
  let rhs = 1n;
  if (exp2 >= 0) lhs <<= BigInt(exp2);
  else rhs <<= BigInt(-exp2);
  // compare lhs / rhs with 10^k
  if (k >= 0) rhs *= 10n ** BigInt(k);
  else lhs *= 10n ** BigInt(-k);
  return lhs < rhs ? -1 : lhs > rhs ? 1 : 0;
}

function checkInput(x: number): void {
  if (!Number.isFinite(x)) throw new RangeError(`printf: non-finite value ${x}`);
}

/** printf("%.<digits>f", x) */
export function printfFixed(x: number, digits: number): string {
  checkInput(x);
  const neg = x < 0 || Object.is(x, -0);
  const q = scaledRound(Math.abs(x), digits).toString();
  let s: string;
  if (digits === 0) s = q;
  else {
    const padded = q.padStart(digits + 1, '0');
    s = `${padded.slice(0, -digits)}.${padded.slice(-digits)}`;
  }
  return neg ? `-${s}` : s;
}

/** printf("%.<precision>g", x) (no '#' flag: trailing zeros removed). */
export function printfG(x: number, precision: number): string {
  checkInput(x);
  const p = precision === 0 ? 1 : precision;
  const neg = x < 0 || Object.is(x, -0);
  const ax = Math.abs(x);
  if (ax === 0) return neg ? '-0' : '0';
  // Exact decimal exponent of x (10^e10 <= x < 10^(e10+1)): log10 is only an estimate, and
  // near a power of ten it can be off by one (log10(1e-7) is -7 though the double 1e-7 is
  // below 10^-7), which would round to one significant digit too few.
  let e10 = Math.floor(Math.log10(ax));
  while (comparePow10(ax, e10) < 0) e10 -= 1;
  while (comparePow10(ax, e10 + 1) >= 0) e10 += 1;
  let q = scaledRound(ax, p - 1 - e10);
  if (q >= 10n ** BigInt(p)) {
    // Rounding carried into a new digit (9.995 -> 10.0): one more in the exponent.
    e10 += 1;
    q /= 10n;
  }
  const digits = q.toString(); // exactly p digits
  let out: string;
  if (e10 < p && e10 >= -4) {
    // %f style with p-1-e10 decimals
    const decimals = p - 1 - e10;
    if (decimals <= 0) out = digits + '0'.repeat(-decimals);
    else {
      const padded = digits.padStart(decimals + 1, '0');
      out = `${padded.slice(0, -decimals)}.${padded.slice(-decimals)}`;
      out = stripZeros(out);
    }
  } else {
    let mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    mant = stripZeros(mant);
    const sign = e10 < 0 ? '-' : '+';
    out = `${mant}e${sign}${String(Math.abs(e10)).padStart(2, '0')}`;
  }
  return neg ? `-${out}` : out;
}

function stripZeros(s: string): string {
  if (!s.includes('.')) return s;
  return s.replace(/0+$/, '').replace(/\.$/, '');
}

/** printf("%#x", n): lowercase hex with a "0x" prefix, except that 0 prints as plain "0". */
export function printfHexAlt(n: number | bigint): string {
  const v = typeof n === 'bigint' ? BigInt.asUintN(64, n) : BigInt.asUintN(64, BigInt(n));
  return v === 0n ? '0' : `0x${v.toString(16)}`;
}

/**
 * printf("%-<width>s") (leftAlign) or printf("%<width>s"): pad with spaces to `width` counted
 * in bytes as C does, never truncate. `length` is the byte length of `text` (for strings that
 * are not plain ASCII pass byteLength(text) from core/byte-string.ts).
 */
export function printfPad(
  text: string,
  width: number,
  leftAlign: boolean,
  length = text.length,
): string {
  const pad = ' '.repeat(Math.max(0, width - length));
  return leftAlign ? text + pad : pad + text;
}
