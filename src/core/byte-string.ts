// C strings from images (snapshot names, bitmap names, backing file names) are bytes, not
// Unicode: QEMU prints them with printf("%s") and escapes them byte by byte in JSON. To carry
// arbitrary bytes in a JS string without loss, vmforge decodes them the way Python's
// "surrogateescape" does (PEP 383): valid UTF-8 becomes the characters it encodes, and every byte
// that is not part of a valid sequence becomes the lone surrogate U+DC80 + (byte - 0x80).
// encodeByteString() restores the exact bytes; plain text round-trips unchanged.

const ESCAPE_BASE = 0xdc00;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decode bytes to a string, keeping invalid UTF-8 bytes as lone surrogates U+DC80..U+DCFF. */
export function decodeByteString(bytes: Uint8Array): string {
  // Valid UTF-8 (nearly always): one native decode, no per-character string building.
  try {
    return strictUtf8.decode(bytes);
  } catch {
    // fall through to the escaping decoder
  }
  const codes: number[] = [];
  const parts: string[] = [];
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      codes.push(b);
      i += 1;
    } else {
      const seq = utf8Sequence(bytes, i);
      if (seq) {
        if (seq.cp > 0xffff)
          codes.push(0xd800 + ((seq.cp - 0x10000) >> 10), 0xdc00 + ((seq.cp - 0x10000) & 0x3ff));
        else codes.push(seq.cp);
        i += seq.len;
      } else {
        codes.push(ESCAPE_BASE + b);
        i += 1;
      }
    }
    if (codes.length >= 4096) parts.push(String.fromCharCode(...codes.splice(0)));
  }
  parts.push(String.fromCharCode(...codes));
  return parts.join('');
}

/** A well-formed, shortest-form UTF-8 sequence for a scalar value at `i`, or undefined. */
function utf8Sequence(bytes: Uint8Array, i: number): { cp: number; len: number } | undefined {
  const b = bytes[i]!;
  let len: number;
  let cp: number;
  let min: number;
  if (b >= 0xc2 && b <= 0xdf) [len, cp, min] = [2, b & 0x1f, 0x80];
  else if (b >= 0xe0 && b <= 0xef) [len, cp, min] = [3, b & 0x0f, 0x800];
  else if (b >= 0xf0 && b <= 0xf4) [len, cp, min] = [4, b & 0x07, 0x10000];
  else return undefined;
  if (i + len > bytes.length) return undefined;
  for (let k = 1; k < len; k++) {
    const c = bytes[i + k]!;
    if ((c & 0xc0) !== 0x80) return undefined;
    cp = (cp << 6) | (c & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return undefined;
  return { cp, len };
}

/**
 * Encode a string to bytes: U+DC80..U+DCFF become the raw bytes 0x80..0xFF, other code points
 * are UTF-8 (any other lone surrogate is written as its 3-byte generalized UTF-8 form, as
 * WTF-8 does, so QEMU's decoder would see one invalid sequence there too).
 */
export function encodeByteString(text: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      const lo = text.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i += 1;
      }
    } else if (cp >= 0xdc80 && cp <= 0xdcff) {
      out.push(cp - ESCAPE_BASE);
      continue;
    }
    pushUtf8(out, cp);
  }
  return Uint8Array.from(out);
}

function pushUtf8(out: number[], cp: number): void {
  if (cp < 0x80) out.push(cp);
  else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
  else if (cp < 0x10000) {
    out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  } else {
    out.push(
      0xf0 | (cp >> 18),
      0x80 | ((cp >> 12) & 0x3f),
      0x80 | ((cp >> 6) & 0x3f),
      0x80 | (cp & 0x3f),
    );
  }
}

/** Length in bytes of encodeByteString(text): what C's strlen() and printf("%-Ns") count. */
export function byteLength(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const cp = text.charCodeAt(i);
    if (cp < 0x80) n += 1;
    else if (cp < 0x800) n += 2;
    else if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      const lo = text.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        n += 4;
        i += 1;
      } else n += 3;
    } else if (cp >= 0xdc80 && cp <= 0xdcff) n += 1;
    else n += 3;
  }
  return n;
}

/**
 * What QEMU's pstrcpy(buf, bufSize, src) leaves in a fixed buffer: the bytes up to the first NUL,
 * at most bufSize - 1 of them (QEMUSnapshotInfo.name is char[256], id_str char[128]). A cut
 * through a multi-byte character leaves the partial bytes, exactly as in C.
 */
export function truncateCString(text: string, bufSize: number): string {
  const bytes = encodeByteString(text);
  let end = bytes.indexOf(0);
  if (end < 0) end = bytes.length;
  end = Math.min(end, Math.max(0, bufSize - 1));
  if (end === bytes.length) return text;
  return decodeByteString(bytes.subarray(0, end));
}
