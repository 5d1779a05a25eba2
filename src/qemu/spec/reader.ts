// Typed, path-aware reading of an untrusted spec object. Every failure names the field with its
// full path (`disks[1].interface`), what is allowed, and what was found (execa's
// "Expected the `x` option to be …, got `v` (type)" form, style.md §3), and unknown keys are
// rejected: a field that is accepted and ignored is a bug.

import { InvalidArgumentError, strtosz } from '../../core/index.js';

/** An invalid VM spec. `details.field` is the dotted path of the offending field. */
export class SpecError extends InvalidArgumentError {
  override name = 'SpecError';
  readonly field: string;
  constructor(field: string, message: string, details: Record<string, unknown> = {}) {
    super(field ? `spec field \`${field}\`: ${message}` : `spec: ${message}`, {
      code: 'VMF_INVALID_SPEC',
      details: { field, ...details },
    });
    this.field = field;
  }
}

/** `value` shown the way a user wrote it, with its type: `"sata" (string)`. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `${JSON.stringify(value).slice(0, 60)} (array)`;
  const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  const shown = typeof value === 'string' ? JSON.stringify(value) : text;
  return `${shown.length > 60 ? `${shown.slice(0, 57)}...` : shown} (${typeof value})`;
}

function childPath(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

/** A value at a path in the spec. Methods validate and convert, or throw a SpecError. */
export class Field {
  constructor(
    readonly value: unknown,
    readonly path: string,
  ) {}

  get present(): boolean {
    return this.value !== undefined && this.value !== null;
  }

  fail(message: string, details: Record<string, unknown> = {}): never {
    throw new SpecError(this.path, message, { got: this.value, ...details });
  }

  expected(what: string): never {
    this.fail(`expected ${what}, got ${describeValue(this.value)}`);
  }

  string(): string {
    if (typeof this.value !== 'string') this.expected('a string');
    return this.value;
  }

  nonEmptyString(): string {
    const s = this.string();
    if (s === '') this.expected('a non-empty string');
    return s;
  }

  bool(): boolean {
    if (typeof this.value !== 'boolean') this.expected('true or false');
    return this.value;
  }

  /** One of `allowed` (strings; numbers in the spec are accepted for numeric-looking names). */
  oneOf<T extends string>(allowed: readonly T[]): T {
    const v = typeof this.value === 'number' ? String(this.value) : this.value;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(`expected one of ${allowed.join(', ')}; got ${describeValue(this.value)}`, {
        allowed,
      });
    }
    return v as T;
  }

  int({ min = 0, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {}): number {
    const v = this.value;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.expected(`an integer between ${min} and ${max}`);
    }
    return v;
  }

  /** A byte count: a number of bytes, or a string with a K/M/G/T suffix (powers of 1024). */
  size({ min = 0, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {}): number {
    let bytes: number | undefined;
    if (typeof this.value === 'number' && Number.isSafeInteger(this.value)) bytes = this.value;
    else if (typeof this.value === 'string') {
      const r = strtosz(this.value);
      if (r.ok && r.value <= BigInt(Number.MAX_SAFE_INTEGER)) bytes = Number(r.value);
    }
    if (bytes === undefined) {
      this.expected('a size: bytes, or a number with a K, M, G or T suffix such as "512M"');
    }
    if (bytes < min || bytes > max) {
      this.fail(
        `expected a size between ${min} and ${max} bytes, got ${describeValue(this.value)}`,
      );
    }
    return bytes;
  }

  array(): Field[] {
    if (!Array.isArray(this.value)) this.expected('a list');
    return this.value.map((v, i) => new Field(v, childPath(this.path, i)));
  }

  /** A list, or a single item standing for a one-item list. */
  arrayOrOne(): Field[] {
    return Array.isArray(this.value) ? this.array() : [this];
  }

  object(): ObjectReader {
    const v = this.value;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.expected('a mapping');
    return new ObjectReader(v as Record<string, unknown>, this.path);
  }

  isObject(): boolean {
    return typeof this.value === 'object' && this.value !== null && !Array.isArray(this.value);
  }
}

/** Reads the keys of one mapping; `done()` rejects every key nobody asked for. */
export class ObjectReader {
  readonly #seen = new Set<string>();
  constructor(
    readonly value: Record<string, unknown>,
    readonly path: string,
  ) {}

  field(key: string): Field {
    this.#seen.add(key);
    const v = Object.hasOwn(this.value, key) ? this.value[key] : undefined;
    return new Field(v, childPath(this.path, key));
  }

  /** The field if present (not undefined/null), else undefined. */
  opt(key: string): Field | undefined {
    const f = this.field(key);
    return f.present ? f : undefined;
  }

  keys(): string[] {
    return Object.keys(this.value);
  }

  done(): void {
    const unknown = Object.keys(this.value).filter((k) => !this.#seen.has(k));
    if (unknown.length > 0) {
      const allowed = [...this.#seen].sort();
      const key = unknown[0]!;
      throw new SpecError(
        childPath(this.path, key),
        `unknown field; allowed here: ${allowed.join(', ')}`,
        { allowed },
      );
    }
  }
}
