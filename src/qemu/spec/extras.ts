// The smaller spec sections: shares (9p, virtio-fs), serial, qmp, display, incoming, smbios,
// rtc, name, uuid, emulator and extraArgs.

import type {
  DisplayModel,
  QmpModel,
  RtcModel,
  SerialModel,
  ShareModel,
  SmbiosModel,
} from '../model.js';
import type { Field, ObjectReader } from './reader.js';

const TAG = /^[A-Za-z0-9_.-]{1,31}$/;

export function readShares(f: Field): ShareModel[] {
  if (!f.present) return [];
  const tags = new Set<string>();
  return f.arrayOrOne().map((item, i) => {
    const o = item.object();
    const kind = o.field('type').oneOf(['9p', 'virtiofs'] as const);
    const path = o.field('path').nonEmptyString();
    const tagField = o.opt('tag');
    const tag = tagField?.string() ?? `share${i}`;
    if (tagField && !TAG.test(tag)) tagField.expected('a mount tag of 1-31 letters, digits, _ . -');
    if (tags.has(tag)) (tagField ?? item).fail(`mount tag ${tag} is used twice`);
    tags.add(tag);
    let share: ShareModel;
    if (kind === '9p') {
      share = {
        id: `fs${i}`,
        kind,
        path,
        tag,
        readonly: o.opt('readonly')?.bool() ?? false,
        // lima's choice: no ownership mapping, works unprivileged (security_model, qemu-options.hx).
        securityModel:
          o
            .opt('securityModel')
            ?.oneOf(['none', 'mapped-xattr', 'mapped-file', 'passthrough'] as const) ?? 'none',
      };
    } else {
      share = { id: `fs${i}`, kind, path, tag, virtiofsd: o.opt('virtiofsd')?.nonEmptyString() };
    }
    o.done();
    return share;
  });
}

export function readSerial(f: Field): SerialModel {
  if (!f.present) return { log: undefined, console: false };
  if (typeof f.value === 'string') return { log: f.nonEmptyString(), console: false };
  const o = f.object();
  const s: SerialModel = {
    log: o.opt('log')?.nonEmptyString(),
    console: o.opt('console')?.bool() ?? false,
  };
  o.done();
  return s;
}

export function readQmp(f: Field): QmpModel {
  if (!f.present) return { kind: 'unix', path: undefined };
  let tcp: string | undefined;
  if (typeof f.value === 'string') {
    if (!f.value.startsWith('tcp:')) return { kind: 'unix', path: f.nonEmptyString() };
    tcp = f.value.slice(4);
  } else {
    const o = f.object();
    const socket = o.opt('socket')?.nonEmptyString();
    const t = o.opt('tcp');
    if (socket && t) t.fail('give either `socket` or `tcp`');
    tcp = t?.string();
    o.done();
    if (!tcp) return { kind: 'unix', path: socket };
  }
  const m = /^(.*):(\d{1,5})$/.exec(tcp);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) f.expected('a TCP endpoint such as "127.0.0.1:4444"');
  return { kind: 'tcp', host: m[1]!.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port };
}

export function readDisplay(f: Field): DisplayModel {
  if (!f.present) return { kind: 'none' };
  if (typeof f.value === 'string') {
    const kind = f.oneOf(['none', 'gtk', 'sdl', 'vnc'] as const);
    return kind === 'vnc' ? { kind, vnc: '127.0.0.1:0' } : { kind };
  }
  const o = f.object();
  const kind = o.field('type').oneOf(['none', 'gtk', 'sdl', 'vnc'] as const);
  const v = o.opt('vnc');
  if (v && kind !== 'vnc') v.fail('only for display type vnc');
  const vnc = v?.string() ?? '127.0.0.1:0';
  if (v && !/^([A-Za-z0-9.-]*|\[[0-9a-fA-F:]+\]):\d+$/.test(vnc))
    v.expected('host:display such as "127.0.0.1:1"');
  o.done();
  return kind === 'vnc' ? { kind, vnc } : kind === 'none' ? { kind } : { kind };
}

export function readIncoming(spec: ObjectReader): string | undefined {
  const f = spec.opt('incoming');
  if (!f) return undefined;
  const v = f.nonEmptyString();
  if (v !== 'defer' && !/^(tcp|unix|rdma|fd|exec):./.test(v)) {
    f.expected('a migration URI such as "tcp:0:4444", "unix:/path", or "defer"');
  }
  return v;
}

const SMBIOS_TYPES = [0, 1, 2, 3, 4, 11, 17];

export function readSmbios(f: Field): SmbiosModel[] {
  if (!f.present) return [];
  return f.arrayOrOne().map((item) => {
    const o = item.object();
    const type = o.field('type').int({ max: 127 });
    if (!SMBIOS_TYPES.includes(type)) {
      o.field('type').fail(`expected one of ${SMBIOS_TYPES.join(', ')}; got ${type}`);
    }
    const fields: [string, string][] = [];
    for (const key of o.keys()) {
      if (key === 'type') continue;
      const v = o.field(key);
      if (!/^[a-z_-]+$/.test(key)) v.fail('an SMBIOS field name such as serial or manufacturer');
      if (typeof v.value !== 'string' && typeof v.value !== 'number')
        v.expected('a string or number');
      fields.push([key, String(v.value)]);
    }
    if (fields.length === 0) item.fail('give at least one field besides type');
    return { type, fields };
  });
}

export function readRtc(f: Field): RtcModel | undefined {
  if (!f.present) return undefined;
  const o = f.object();
  const b = o.opt('base');
  const base = b?.string();
  if (
    b &&
    base !== 'utc' &&
    base !== 'localtime' &&
    !/^\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\d)?$/.test(base!)
  ) {
    b.expected('utc, localtime, or a date such as "2006-06-17T16:01:21"');
  }
  const rtc: RtcModel = {
    base,
    clock: o.opt('clock')?.oneOf(['host', 'rt', 'vm'] as const),
    driftfix: o.opt('driftfix')?.oneOf(['none', 'slew'] as const),
  };
  o.done();
  return rtc;
}

export function readName(spec: ObjectReader): string | undefined {
  const f = spec.opt('name');
  if (!f) return undefined;
  const name = f.nonEmptyString();
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) f.expected('1-64 letters, digits, _ . -');
  return name;
}

export function readUuid(spec: ObjectReader): string | undefined {
  const f = spec.opt('uuid');
  if (!f) return undefined;
  const uuid = f.string();
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uuid)) {
    f.expected('a UUID such as 6f1c3a4e-0b9d-4f7e-9d53-2a8e4d7c1b00');
  }
  return uuid.toLowerCase();
}

export function readExtraArgs(spec: ObjectReader): string[] {
  const f = spec.opt('extraArgs');
  return f
    ? f.array().map((a) => (typeof a.value === 'number' ? String(a.value) : a.string()))
    : [];
}
