// QEMU's JSON text, byte for byte: qobject_to_json_pretty() (qobject/qjson.c) over the
// JSONWriter of qobject/json-writer.c, with QDict's hash-table key order (qobject/qdict.c).
//
// A JS value stands for a QObject: null, boolean, number / bigint (QNum), string (QString, a C
// string carried as a byte string, see core/byte-string.ts), array (QList) and plain object
// (QDict). An object's own key order is taken as the order in which QEMU inserted the keys;
// qapi-order.ts rebuilds typed results in QAPI declaration order, which is the order QEMU's
// output visitor inserts them.

import { encodeByteString } from '../../core/byte-string.js';
import { printfG } from '../../core/printf.js';

/** A value QEMU's QObject model can hold. Properties that are undefined are left out. */
export type QValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | readonly QValue[]
  | { readonly [key: string]: QValue | undefined };

/** QDICT_BUCKET_MAX in include/qapi/qmp/qdict.h. */
export const QDICT_BUCKETS = 512;

/**
 * tdb_hash() from qobject/qdict.c (gdbm's hash via tdb), over the key's bytes, in uint32
 * arithmetic: v = 0x238F13AF * strlen; v += byte[i] << (i*5 % 24); return 1103515243*v + 12345.
 */
export function tdbHash(key: string): number {
  const bytes = encodeByteString(key);
  let v = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    v = (v + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, v) + 12345) >>> 0;
}

/**
 * The order qdict_first()/qdict_next() visit keys that were inserted in `insertionOrder`:
 * buckets 0..511 in turn, and within a bucket the most recently inserted key first
 * (qdict_put_obj uses QLIST_INSERT_HEAD). Re-inserting an existing key keeps its place.
 */
export function qdictOrder(insertionOrder: readonly string[]): string[] {
  const buckets = new Map<number, string[]>();
  const seen = new Set<string>();
  for (const key of insertionOrder) {
    if (seen.has(key)) continue;
    seen.add(key);
    const b = tdbHash(key) % QDICT_BUCKETS;
    let list = buckets.get(b);
    if (!list) buckets.set(b, (list = []));
    list.unshift(key);
  }
  return [...buckets.keys()].sort((a, b) => a - b).flatMap((b) => buckets.get(b)!);
}

/** The keys of a plain object as QEMU would iterate them (undefined values skipped). */
export function qdictKeys(obj: { readonly [key: string]: unknown }): string[] {
  return qdictOrder(Object.keys(obj).filter((k) => obj[k] !== undefined));
}

/** qnum_to_string() / json_writer_int64 / json_writer_double: "%" PRId64 or "%.17g". */
export function formatQNum(value: number | bigint): string {
  if (typeof value === 'bigint') return value.toString();
  if (Number.isInteger(value)) return BigInt(value).toString();
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  return printfG(value, 17);
}

/**
 * quoted_str() of json-writer.c: decode the C string's bytes with mod_utf8_codepoint() and
 * escape: \" \\ \b \f \n \r \t; other code points below 0x20 and from 0x7F up as \uXXXX
 * (uppercase hex), beyond the BMP as a surrogate pair, every invalid sequence as \uFFFD.
 * The string ends at its first NUL byte, as a C string does.
 */
export function quoteJsonString(text: string): string {
  const bytes = encodeByteString(text);
  let out = '"';
  let i = 0;
  while (i < bytes.length && bytes[i] !== 0) {
    const { cp: decoded, end } = modUtf8Codepoint(bytes, i);
    i = end;
    const cp = decoded < 0 ? 0xfffd : decoded;
    switch (cp) {
      case 0x22:
        out += '\\"';
        break;
      case 0x5c:
        out += '\\\\';
        break;
      case 0x08:
        out += '\\b';
        break;
      case 0x0c:
        out += '\\f';
        break;
      case 0x0a:
        out += '\\n';
        break;
      case 0x0d:
        out += '\\r';
        break;
      case 0x09:
        out += '\\t';
        break;
      default:
        if (cp > 0xffff) {
          out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
        } else if (cp < 0x20 || cp >= 0x7f) {
          out += `\\u${hex4(cp)}`;
        } else {
          out += String.fromCharCode(cp);
        }
    }
  }
  return out + '"';
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

const MIN_CP = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/**
 * mod_utf8_codepoint(s, 6, &end) from util/unicode.c: the code point at `start` (-1 when the
 * sequence is invalid) and where the next one begins. Modified UTF-8: "\xC0\x80" is U+0000.
 */
export function modUtf8Codepoint(bytes: Uint8Array, start: number): { cp: number; end: number } {
  let p = start;
  let byte = bytes[p++] ?? 0;
  if (byte < 0x80) return { cp: byte, end: p };
  if (byte >= 0xfe || (byte & 0x40) === 0) return { cp: -1, end: p }; // impossible / continuation
  let len = 0;
  let mask = 0x80;
  for (; byte & mask; mask >>= 1) len++;
  let cp = byte & (mask - 1);
  for (let i = 1; i < len; i++) {
    byte = bytes[p] ?? 0; // the C string's NUL terminator ends a truncated sequence
    if ((byte & 0xc0) !== 0x80) return { cp: -1, end: p };
    p++;
    cp = cp * 64 + (byte & 0x3f); // up to 31 bits: stay out of signed 32-bit shifts
  }
  if (!isValidCodepoint(cp)) cp = -1;
  else if (cp < MIN_CP[len - 2]! && !(cp === 0 && len === 2)) cp = -1; // overlong
  return { cp, end: p };
}

function isValidCodepoint(cp: number): boolean {
  if (cp > 0x10ffff) return false;
  if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false; // noncharacter
  if (cp >= 0xd800 && cp <= 0xdfff) return false; // surrogate
  return true;
}

/** qobject_to_json_pretty(obj, pretty): the text without qemu-img's trailing newline. */
export function qobjectToJson(value: QValue, pretty = true): string {
  const w = new JsonWriter(pretty);
  w.value(null, value);
  return w.contents;
}

/** What qemu-img prints for a QAPI result with --output=json: the pretty text and "\n". */
export function qemuJson(value: QValue): string {
  return `${qobjectToJson(value, true)}\n`;
}

/** json-writer.c's state machine, so commas, newlines and indentation fall where QEMU's do. */
class JsonWriter {
  contents = '';
  #needComma = false;
  readonly #containerIsArray: boolean[] = [];
  readonly #pretty: boolean;

  constructor(pretty: boolean) {
    this.#pretty = pretty;
  }

  value(name: string | null, v: QValue): void {
    if (v === null) this.#scalar(name, 'null');
    else if (typeof v === 'boolean') this.#scalar(name, v ? 'true' : 'false');
    else if (typeof v === 'number' || typeof v === 'bigint') this.#scalar(name, formatQNum(v));
    else if (typeof v === 'string') this.#scalar(name, quoteJsonString(v));
    else if (isArray(v)) {
      this.#start(name, '[', true);
      for (const item of v) this.value(null, item);
      this.#end(']', true);
    } else {
      this.#start(name, '{', false);
      for (const key of qdictKeys(v)) this.value(key, v[key]!);
      this.#end('}', false);
    }
  }

  #newline(): void {
    if (this.#pretty) this.contents += `\n${' '.repeat(this.#containerIsArray.length * 4)}`;
  }

  #maybeCommaName(name: string | null): void {
    if (this.#needComma) {
      this.contents += ',';
      if (this.#pretty) this.#newline();
      else this.contents += ' ';
    } else {
      if (this.contents.length) this.#newline();
      this.#needComma = true;
    }
    const depth = this.#containerIsArray.length;
    if (depth && !this.#containerIsArray[depth - 1]) {
      this.contents += `${quoteJsonString(name ?? '')}: `;
    }
  }

  #scalar(name: string | null, text: string): void {
    this.#maybeCommaName(name);
    this.contents += text;
  }

  #start(name: string | null, open: string, isArray: boolean): void {
    this.#maybeCommaName(name);
    this.contents += open;
    this.#containerIsArray.push(isArray);
    this.#needComma = false;
  }

  #end(close: string, isArray: boolean): void {
    const was = this.#containerIsArray.pop();
    if (was !== isArray) throw new Error('JsonWriter: unbalanced container');
    this.#needComma = true;
    this.#newline();
    this.contents += close;
  }
}

function isArray(v: QValue): v is readonly QValue[] {
  return Array.isArray(v);
}
