// QEMU's output visitor (qapi/qobject-output-visitor.c driven by the generated visit_type_*)
// inserts struct members into the QDict in QAPI declaration order; the order matters because
// keys that share a hash bucket print most-recently-inserted first (qobject-json.ts). These
// schemas copy the member order of qapi/block-core.json and qapi/crypto.json (QEMU 7.2), so the
// output does not depend on the key order of the object a caller built or parsed.
// Flat unions insert their base members, then the members of the chosen variant.

import type { QValue } from './qobject-json.js';

export type Schema =
  | { kind: 'scalar' }
  | { kind: 'list'; of: Schema }
  | { kind: 'struct'; members: readonly (readonly [string, Schema])[] }
  | {
      kind: 'union';
      base: readonly (readonly [string, Schema])[];
      discriminator: string;
      variants: Readonly<Record<string, readonly (readonly [string, Schema])[]>>;
    };

const scalar: Schema = { kind: 'scalar' };
const list = (of: Schema): Schema => ({ kind: 'list', of });
const struct = (...members: (readonly [string, Schema])[]): Schema => ({ kind: 'struct', members });
const s = (name: string): readonly [string, Schema] => [name, scalar];

export const SnapshotInfoSchema = struct(
  s('id'),
  s('name'),
  s('vm-state-size'),
  s('date-sec'),
  s('date-nsec'),
  s('vm-clock-sec'),
  s('vm-clock-nsec'),
  s('icount'),
);

const Qcow2BitmapInfoSchema = struct(s('name'), s('granularity'), ['flags', list(scalar)]);

const LuksSlotSchema = struct(s('active'), s('iters'), s('stripes'), s('key-offset'));

const luksMembers: (readonly [string, Schema])[] = [
  s('cipher-alg'),
  s('cipher-mode'),
  s('ivgen-alg'),
  s('ivgen-hash-alg'),
  s('hash-alg'),
  s('payload-offset'),
  s('master-key-iters'),
  s('uuid'),
  ['slots', list(LuksSlotSchema)],
];

/** ImageInfoSpecificQCow2Encryption: base {format}, variant luks = QCryptoBlockInfoLUKS. */
const Qcow2EncryptionSchema: Schema = {
  kind: 'union',
  base: [s('format')],
  discriminator: 'format',
  variants: { aes: [], luks: luksMembers },
};

const ImageInfoSpecificQCow2Schema = struct(
  s('compat'),
  s('data-file'),
  s('data-file-raw'),
  s('extended-l2'),
  s('lazy-refcounts'),
  s('corrupt'),
  s('refcount-bits'),
  ['encrypt', Qcow2EncryptionSchema],
  ['bitmaps', list(Qcow2BitmapInfoSchema)],
  s('compression-type'),
);

/** ImageInfoSpecific: base {type}, each variant a wrapper {data}. */
export const ImageInfoSpecificSchema: Schema = {
  kind: 'union',
  base: [s('type')],
  discriminator: 'type',
  variants: {
    qcow2: [['data', ImageInfoSpecificQCow2Schema]],
    luks: [['data', struct(...luksMembers)]],
  },
};

const imageInfoMembers: (readonly [string, Schema])[] = [];
export const ImageInfoSchema: Schema = { kind: 'struct', members: imageInfoMembers };
imageInfoMembers.push(
  s('filename'),
  s('format'),
  s('dirty-flag'),
  s('actual-size'),
  s('virtual-size'),
  s('cluster-size'),
  s('encrypted'),
  s('compressed'),
  s('backing-filename'),
  s('full-backing-filename'),
  s('backing-filename-format'),
  ['snapshots', list(SnapshotInfoSchema)],
  ['backing-image', ImageInfoSchema],
  ['format-specific', ImageInfoSpecificSchema],
);

export const ImageCheckSchema = struct(
  s('filename'),
  s('format'),
  s('check-errors'),
  s('image-end-offset'),
  s('corruptions'),
  s('leaks'),
  s('corruptions-fixed'),
  s('leaks-fixed'),
  s('total-clusters'),
  s('allocated-clusters'),
  s('fragmented-clusters'),
  s('compressed-clusters'),
);

export const BlockMeasureInfoSchema = struct(s('required'), s('fully-allocated'), s('bitmaps'));

/**
 * A copy of `value` whose objects have their keys in QAPI insertion order. Members that are
 * absent or undefined are left out (QEMU's has_* = false). Keys the schema does not know are
 * kept, after the known ones, so nothing a caller adds disappears silently.
 */
export function inQapiOrder(value: unknown, schema: Schema): QValue {
  if (value === undefined) throw new TypeError('inQapiOrder: undefined value');
  switch (schema.kind) {
    case 'scalar':
      return value as QValue;
    case 'list':
      if (!Array.isArray(value)) return asQValue(value);
      return value.map((v: unknown) => inQapiOrder(v, schema.of));
    case 'struct':
      return orderMembers(value, schema.members);
    case 'union': {
      if (!isPlainObject(value)) return asQValue(value);
      const tag = value[schema.discriminator];
      const variant = typeof tag === 'string' ? schema.variants[tag] : undefined;
      return orderMembers(value, [...schema.base, ...(variant ?? [])]);
    }
  }
}

function orderMembers(value: unknown, members: readonly (readonly [string, Schema])[]): QValue {
  if (!isPlainObject(value)) return asQValue(value);
  const out = Object.create(null) as Record<string, QValue>; // no __proto__ surprises
  const known = new Set<string>();
  for (const [name, schema] of members) {
    known.add(name);
    const v = value[name];
    if (v !== undefined) out[name] = inQapiOrder(v, schema);
  }
  for (const [name, v] of Object.entries(value)) {
    if (!known.has(name) && v !== undefined) out[name] = asQValue(v);
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function asQValue(v: unknown): QValue {
  return v as QValue;
}
