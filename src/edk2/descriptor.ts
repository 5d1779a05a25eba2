// QEMU firmware descriptors (qemu docs/interop/firmware.json, struct Firmware): decode a JSON
// document into a typed descriptor, validate it against the schema, encode one for firmware
// vmforge stores. Unknown features are kept but ignored by selection (libvirt does the same);
// unknown enum values in mandatory fields make the descriptor invalid.

import { CorruptImageError } from '../core/index.js';

export const INTERFACE_TYPES = ['bios', 'openfirmware', 'uboot', 'uefi'] as const;
export type FirmwareInterface = (typeof INTERFACE_TYPES)[number];

export const FIRMWARE_FEATURES = [
  'acpi-s3',
  'acpi-s4',
  'amd-sev',
  'amd-sev-es',
  'amd-sev-snp',
  'intel-tdx',
  'enrolled-keys',
  'requires-smm',
  'secure-boot',
  'verbose-dynamic',
  'verbose-static',
  // Since QEMU 10.0 (not in 7.2's schema): the host provides the variable store.
  'host-uefi-vars',
] as const;
export type KnownFirmwareFeature = (typeof FIRMWARE_FEATURES)[number];

export const FLASH_MODES = ['split', 'combined', 'stateless'] as const;
export type FlashMode = (typeof FLASH_MODES)[number];

export interface FirmwareFlashFile {
  filename: string;
  /** BlockdevDriver, in practice `raw` or `qcow2`. */
  format: string;
}

export type FirmwareMapping =
  | {
      device: 'flash';
      /** Absent in the file means `split` (firmware.json, FirmwareMappingFlash.mode). */
      mode: FlashMode;
      executable: FirmwareFlashFile;
      'nvram-template'?: FirmwareFlashFile;
    }
  | { device: 'kernel'; filename: string }
  | { device: 'memory'; filename: string };

export interface FirmwareTarget {
  architecture: string;
  machines: string[];
}

export interface FirmwareDescriptor {
  description: string;
  'interface-types': FirmwareInterface[];
  mapping: FirmwareMapping;
  targets: FirmwareTarget[];
  /** As written; may include features newer than this code knows. */
  features: string[];
  tags: string[];
}

const fail = (path: string, m: string) =>
  new CorruptImageError(`invalid firmware descriptor '${path}': ${m}`, {
    code: 'VMF_FW_DESCRIPTOR',
  });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parse and validate one descriptor file's text. `path` is used in messages only. */
export function decodeDescriptor(text: string, path: string): FirmwareDescriptor {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw fail(path, `not JSON (${(err as Error).message})`);
  }
  return validateDescriptor(doc, path);
}

/** Check a parsed JSON value against firmware.json's Firmware struct; returns the typed value. */
export function validateDescriptor(doc: unknown, path: string): FirmwareDescriptor {
  if (!isObject(doc)) throw fail(path, 'the top level is not an object');
  const str = (v: unknown, field: string): string => {
    if (typeof v !== 'string') throw fail(path, `'${field}' must be a string`);
    return v;
  };
  const strList = (v: unknown, field: string): string[] => {
    if (!Array.isArray(v)) throw fail(path, `'${field}' must be an array`);
    return v.map((x, i) => str(x, `${field}[${i}]`));
  };
  for (const key of ['description', 'interface-types', 'mapping', 'targets', 'features', 'tags'])
    if (!(key in doc)) throw fail(path, `missing mandatory member '${key}'`);

  const description = str(doc['description'], 'description');
  const interfaces = strList(doc['interface-types'], 'interface-types');
  if (interfaces.length === 0) throw fail(path, "'interface-types' is empty");
  for (const i of interfaces)
    if (!(INTERFACE_TYPES as readonly string[]).includes(i))
      throw fail(path, `unknown interface type '${i}'`);

  const m = doc['mapping'];
  if (!isObject(m)) throw fail(path, "'mapping' must be an object");
  const device = str(m['device'], 'mapping.device');
  let mapping: FirmwareMapping;
  if (device === 'flash') {
    const file = (v: unknown, field: string): FirmwareFlashFile => {
      if (!isObject(v)) throw fail(path, `'${field}' must be an object`);
      return {
        filename: str(v['filename'], `${field}.filename`),
        format: str(v['format'], `${field}.format`),
      };
    };
    const mode = m['mode'] === undefined ? 'split' : str(m['mode'], 'mapping.mode');
    if (!(FLASH_MODES as readonly string[]).includes(mode))
      throw fail(path, `unknown flash mode '${mode}'`);
    const executable = file(m['executable'], 'mapping.executable');
    const tpl = m['nvram-template'];
    if (mode === 'split' && tpl === undefined)
      throw fail(path, "flash mode 'split' needs 'mapping.nvram-template'");
    if (mode !== 'split' && tpl !== undefined)
      throw fail(path, `flash mode '${mode}' must not have 'mapping.nvram-template'`);
    mapping =
      tpl === undefined
        ? { device, mode: mode as FlashMode, executable }
        : {
            device,
            mode: mode as FlashMode,
            executable,
            'nvram-template': file(tpl, 'mapping.nvram-template'),
          };
  } else if (device === 'kernel' || device === 'memory') {
    mapping = { device, filename: str(m['filename'], 'mapping.filename') };
  } else {
    throw fail(path, `unknown mapping device '${device}'`);
  }

  const t = doc['targets'];
  if (!Array.isArray(t)) throw fail(path, "'targets' must be an array");
  const targets = t.map((x, i): FirmwareTarget => {
    if (!isObject(x)) throw fail(path, `'targets[${i}]' must be an object`);
    return {
      architecture: str(x['architecture'], `targets[${i}].architecture`),
      machines: strList(x['machines'], `targets[${i}].machines`),
    };
  });

  return {
    description,
    'interface-types': interfaces as FirmwareInterface[],
    mapping,
    targets,
    features: strList(doc['features'], 'features'),
    tags: strList(doc['tags'], 'tags'),
  };
}

/** Serialise a descriptor the way QEMU's and distros' files look (4-space JSON). */
export function encodeDescriptor(d: FirmwareDescriptor): string {
  const mapping =
    d.mapping.device === 'flash' && d.mapping.mode === 'split'
      ? // `split` is the default; leave it out so QEMU < 7.0 readers accept the file.
        (({ mode: _mode, ...rest }) => rest)(d.mapping)
      : d.mapping;
  return `${JSON.stringify({ ...d, mapping }, null, 4)}\n`;
}

/** The code image of a descriptor (flash executable, or the -kernel/-bios file). */
export function executableOf(d: FirmwareDescriptor): FirmwareFlashFile {
  return d.mapping.device === 'flash'
    ? d.mapping.executable
    : { filename: d.mapping.filename, format: 'raw' };
}

/** The NVRAM template, when the descriptor has one (flash, split mode). */
export function nvramTemplateOf(d: FirmwareDescriptor): FirmwareFlashFile | undefined {
  return d.mapping.device === 'flash' ? d.mapping['nvram-template'] : undefined;
}
