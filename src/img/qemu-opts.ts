// qemu-img's -o option strings (util/qemu-option.c): "a=1,b=x,,y" parsing with ',,' escapes,
// typed validation with QEMU's messages, `-o help` listings, and the "Formatting ..." echo
// (qemu_opts_print). The option lists mirror QEMU 7.2's create_opts for qcow2, raw and the file
// protocol, in QEMU's order (which is the order the echo uses).

import { InvalidArgumentError } from '../core/index.js';
import { strtosz } from '../core/units.js';

export type OptType = 'string' | 'bool' | 'size' | 'number';

export interface OptDesc {
  name: string;
  type: OptType;
  help: string;
  /** Printed by the "Formatting" echo when the option is not set (def_value_str). */
  def?: string;
}

export interface OptValue {
  /** The text as given (what QEMU echoes for strings and booleans). */
  str: string;
  /** Parsed value for bool, size and number options. */
  value: boolean | number | bigint | string;
}

const s = (name: string, help: string, def?: string): OptDesc => ({
  name,
  type: 'string',
  help,
  ...(def ? { def } : {}),
});
const b = (name: string, help: string, def?: string): OptDesc => ({
  name,
  type: 'bool',
  help,
  ...(def ? { def } : {}),
});
const z = (name: string, help: string, def?: string): OptDesc => ({
  name,
  type: 'size',
  help,
  ...(def ? { def } : {}),
});
const n = (name: string, help: string, def?: string): OptDesc => ({
  name,
  type: 'number',
  help,
  ...(def ? { def } : {}),
});

/** block/qcow2.c qcow2_create_opts, in declaration order. */
export const QCOW2_CREATE_OPTS: OptDesc[] = [
  b(
    'encryption',
    "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
  ),
  s('encrypt.format', "Encrypt the image, format choices: 'aes', 'luks'"),
  s('encrypt.key-secret', 'ID of secret providing qcow AES key or LUKS passphrase'),
  s('encrypt.cipher-alg', 'Name of encryption cipher algorithm'),
  s('encrypt.cipher-mode', 'Name of encryption cipher mode'),
  s('encrypt.ivgen-alg', 'Name of IV generator algorithm'),
  s('encrypt.ivgen-hash-alg', 'Name of IV generator hash algorithm'),
  s('encrypt.hash-alg', 'Name of encryption hash algorithm'),
  n('encrypt.iter-time', 'Time to spend in PBKDF in milliseconds'),
  z('cluster_size', 'qcow2 cluster size', '65536'),
  b('extended_l2', 'Extended L2 tables', 'off'),
  s('preallocation', 'Preallocation mode (allowed values: off, metadata, falloc, full)'),
  s('compression_type', 'Compression method used for image cluster compression', 'zlib'),
  z('size', 'Virtual disk size'),
  s('compat', 'Compatibility level (v2 [0.10] or v3 [1.1])'),
  s('backing_file', 'File name of a base image'),
  s('backing_fmt', 'Image format of the base image'),
  s('data_file', 'File name of an external data file'),
  b('data_file_raw', 'The external data file must stay valid as a raw image'),
  b('lazy_refcounts', 'Postpone refcount updates', 'off'),
  n('refcount_bits', 'Width of a reference count entry in bits', '16'),
];

/** block/raw-format.c raw_create_opts. */
export const RAW_CREATE_OPTS: OptDesc[] = [z('size', 'Virtual disk size')];

/** block/file-posix.c raw_create_opts (the protocol's options, appended after the format's). */
export const FILE_CREATE_OPTS: OptDesc[] = [
  z('size', 'Virtual disk size'),
  b('nocow', 'Turn off copy-on-write (valid only on btrfs)'),
  s('preallocation', 'Preallocation mode (allowed values: off, falloc, full)'),
  z('extent_size_hint', 'Extent size hint for the image file, 0 to disable'),
];

/** qemu_opts_append(): the format's options, then the protocol's that are new. */
export function appendOpts(...lists: OptDesc[][]): OptDesc[] {
  const out: OptDesc[] = [];
  for (const list of lists)
    for (const d of list) if (!out.some((o) => o.name === d.name)) out.push(d);
  return out;
}

/** Split "a=1,b=x,,y" into [name, value] pairs (',,' is a literal comma). */
export function splitOptions(text: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  let i = 0;
  while (i < text.length) {
    let name = '';
    while (i < text.length && text[i] !== '=' && text[i] !== ',') name += text[i++];
    let value: string | undefined;
    if (text[i] === '=') {
      i++;
      value = '';
      while (i < text.length) {
        if (text[i] === ',') {
          if (text[i + 1] === ',') {
            value += ',';
            i += 2;
            continue;
          }
          break;
        }
        value += text[i++];
      }
    }
    if (text[i] === ',') i++;
    out.push([name, value]);
  }
  return out;
}

/** has_help_option(): "-o help" or "-o ?" anywhere in the list. */
export function hasHelpOption(text: string): boolean {
  return splitOptions(text).some(
    ([name, value]) => value === undefined && (name === 'help' || name === '?'),
  );
}

function parseValue(desc: OptDesc, str: string): OptValue['value'] {
  switch (desc.type) {
    case 'bool':
      if (['on', 'yes', 'true', 'y'].includes(str)) return true;
      if (['off', 'no', 'false', 'n'].includes(str)) return false;
      throw new InvalidArgumentError(`Parameter '${desc.name}' expects 'on' or 'off'`);
    case 'size': {
      const r = strtosz(str);
      if (!r.ok && r.reason === 'range') {
        throw new InvalidArgumentError(
          `Value '${str}' is out of range for parameter '${desc.name}'`,
        );
      }
      if (!r.ok) {
        throw new InvalidArgumentError(
          `Parameter '${desc.name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`,
        );
      }
      return r.value;
    }
    case 'number': {
      // qemu_strtou64(value, NULL, 0, ...): decimal, 0x hex or 0 octal.
      const t = str.trim();
      if (/^0[xX][0-9a-fA-F]+$/.test(t) || /^[1-9]\d*$/.test(t)) return BigInt(t);
      if (/^0[0-7]*$/.test(t)) return BigInt(`0o${t.slice(1) || '0'}`);
      throw new InvalidArgumentError(`Parameter '${desc.name}' expects a number`);
    }
    default:
      return str;
  }
}

/** A bare option word as QEMU reads it: [name, value] ("noX" -> [X, 'off'], X -> [X, 'on']). */
export function bareFlag(word: string): [string, string] {
  return word.startsWith('no') ? [word.slice(2), 'off'] : [word, 'on'];
}

/** Parsed -o options for one option list; later values replace earlier ones. */
export class QemuOpts {
  readonly list: OptDesc[];
  readonly #values = new Map<string, OptValue>();
  /** Names in the order they were first set (qemu_opts keeps a list, newest last). */
  readonly #order: string[] = [];

  constructor(list: OptDesc[]) {
    this.list = list;
  }

  /** Parse an -o string (qemu_opts_do_parse); unknown names are "Invalid parameter". */
  parse(text: string): this {
    for (const [rawName, raw] of splitOptions(text)) {
      // get_opt_name_value(): a bare word is a flag, "noX" meaning X=off and X meaning X=on,
      // whatever X's type (so "-o compat" reads as compat=on).
      const [name, str] = raw !== undefined ? [rawName, raw] : bareFlag(rawName);
      const desc = this.list.find((d) => d.name === name);
      if (!desc) throw new InvalidArgumentError(`Invalid parameter '${name}'`);
      this.set(name, str);
    }
    return this;
  }

  set(name: string, str: string): void {
    const desc = this.list.find((d) => d.name === name);
    if (!desc) throw new InvalidArgumentError(`Invalid parameter '${name}'`);
    this.#values.set(name, { str, value: parseValue(desc, str) });
    if (!this.#order.includes(name)) this.#order.push(name);
  }

  has(name: string): boolean {
    return this.#values.has(name);
  }

  get(name: string): OptValue | undefined {
    return this.#values.get(name);
  }

  str(name: string): string | undefined {
    return this.#values.get(name)?.str;
  }

  bool(name: string): boolean | undefined {
    const v = this.#values.get(name)?.value;
    return typeof v === 'boolean' ? v : undefined;
  }

  /** A size or number option as a safe integer. */
  num(name: string): number | undefined {
    const v = this.#values.get(name)?.value;
    if (typeof v === 'bigint') {
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new InvalidArgumentError(
          `Value '${this.str(name)}' is out of range for parameter '${name}'`,
        );
      }
      return Number(v);
    }
    return undefined;
  }

  /** qemu_opts_print(opts, " "): set options and defaults, in list order. */
  print(): string {
    const parts: string[] = [];
    for (const d of this.list) {
      const v = this.#values.get(d.name);
      const value = v ? v.str : d.def;
      if (value === undefined) continue;
      if (d.type === 'string') parts.push(`${d.name}=${value.replaceAll(',', ',,')}`);
      else if ((d.type === 'size' || d.type === 'number') && v)
        parts.push(`${d.name}=${BigInt.asIntN(64, v.value as bigint).toString()}`);
      else parts.push(`${d.name}=${value}`);
    }
    return parts.join(' ');
  }
}

/** qemu_opts_print_help(): sorted "  name=<type>   - help" lines under a caption. */
export function optionHelp(caption: string, list: OptDesc[]): string {
  const typeName: Record<OptType, string> = {
    string: 'str',
    bool: 'bool (on/off)',
    size: 'size',
    number: 'num',
  };
  const lines = list.map((d) => {
    let line = `  ${d.name}=<${typeName[d.type]}>`;
    if (line.length < 24) line += ' '.repeat(24 - line.length);
    return `${line} - ${d.help}`;
  });
  lines.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  return `${caption} options:\n${lines.join('\n')}\n`;
}
