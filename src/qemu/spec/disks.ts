// `disks`: a path or an NBD URI each, with format, interface, media, readonly, snapshot,
// bootindex, cache, aio, discard and serial. Cache modes map onto -blockdev cache.direct /
// cache.no-flush and the device's write-cache as in qemu-options.hx ("-drive cache=").

import { InvalidArgumentError } from '../../core/index.js';
import { parseNbdUri, type NbdUri } from '../../nbd/uri.js';
import type { CacheMode, DiskInterface, DiskModel, DiskSource } from '../model.js';
import type { Field } from './reader.js';
import { SpecError } from './reader.js';

export const DISK_INTERFACES = ['virtio-blk', 'virtio-scsi', 'nvme', 'ide'] as const;
export const CACHE_MODES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'] as const;
const FORMATS = ['raw', 'qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx', 'qed', 'luks'] as const;

export function readDisks(f: Field): DiskModel[] {
  if (!f.present) return [];
  const disks = f.arrayOrOne().map((item, i) => readDisk(item, i));
  const boot = new Map<number, string>();
  for (const [i, d] of disks.entries()) {
    if (d.bootindex === undefined) continue;
    const other = boot.get(d.bootindex);
    if (other) {
      throw new SpecError(
        `${f.path}[${i}].bootindex`,
        `bootindex ${d.bootindex} is also used by ${other}`,
      );
    }
    boot.set(d.bootindex, `${f.path}[${i}]`);
  }
  // With no bootindex anywhere the first disk boots, as a single-disk libvirt domain does.
  if (boot.size === 0 && disks[0]) disks[0].bootindex = 1;
  return disks;
}

function readDisk(item: Field, i: number): DiskModel {
  if (typeof item.value === 'string') {
    return finish(item, baseDisk(i, readSource(item, item.value)));
  }
  const o = item.object();
  const pathField = o.opt('path');
  const uriField = o.opt('uri');
  if (pathField && uriField) uriField.fail('give either `path` or `uri`, not both');
  if (!pathField && !uriField) o.field('path').fail('each disk needs a `path` (or an NBD `uri`)');
  const src = pathField ?? uriField!;
  const disk = baseDisk(i, readSource(src, src.nonEmptyString(), uriField !== undefined));
  const format = o.opt('format');
  if (format) disk.format = format.oneOf(FORMATS);
  disk.interface = o.opt('interface')?.oneOf(DISK_INTERFACES) ?? 'virtio-blk';
  disk.media = o.opt('media')?.oneOf(['disk', 'cdrom'] as const) ?? 'disk';
  disk.readonly = o.opt('readonly')?.bool() ?? disk.media === 'cdrom';
  disk.snapshot = o.opt('snapshot')?.bool() ?? false;
  disk.bootindex = o.opt('bootindex')?.int({ min: 0, max: 999 });
  disk.cache = o.opt('cache')?.oneOf(CACHE_MODES) ?? 'writeback';
  disk.aio = o.opt('aio')?.oneOf(['threads', 'native', 'io_uring'] as const);
  disk.discard = o.opt('discard')?.bool() ?? false;
  const serial = o.opt('serial');
  if (serial) {
    disk.serial = serial.nonEmptyString();
    if (!/^[\x20-\x7e]{1,20}$/.test(disk.serial) || disk.serial.includes(',')) {
      serial.expected('up to 20 printable ASCII characters without commas');
    }
  }
  const fieldOf = (k: string): Field => o.field(k);
  o.done();
  return finish(item, disk, fieldOf);
}

function finish(
  item: Field,
  disk: DiskModel,
  fieldOf: (k: string) => Field = () => item,
): DiskModel {
  if (disk.media === 'cdrom' && disk.interface !== 'ide' && disk.interface !== 'virtio-scsi') {
    fieldOf('media').fail(`a cdrom needs interface ide or virtio-scsi, not ${disk.interface}`);
  }
  if (disk.media === 'cdrom' && !disk.readonly) fieldOf('readonly').fail('a cdrom is read-only');
  if (disk.interface === 'ide' && disk.media === 'disk' && disk.readonly) {
    // hw/ide/qdev.c: ide-hd refuses read-only block nodes.
    fieldOf('readonly').fail(
      'an ide hard disk cannot be read-only; use media cdrom, or virtio-blk',
    );
  }
  if (disk.aio === 'native' && disk.cache !== 'none' && disk.cache !== 'directsync') {
    fieldOf('aio').fail(`aio native needs cache none or directsync (O_DIRECT), not ${disk.cache}`);
  }
  if (disk.source.kind === 'nbd' && disk.aio) fieldOf('aio').fail('aio applies to files, not NBD');
  if (disk.source.kind === 'nbd' && (disk.cache === 'none' || disk.cache === 'directsync')) {
    fieldOf('cache').fail(
      `cache ${disk.cache} means O_DIRECT on a host file; an NBD disk takes writeback, writethrough or unsafe`,
    );
  }
  if (disk.snapshot && disk.readonly) {
    fieldOf('snapshot').fail('a snapshot overlay is writable; drop readonly or snapshot');
  }
  return disk;
}

function baseDisk(i: number, source: DiskSource): DiskModel {
  return {
    id: `disk${i}`,
    source,
    format: undefined,
    interface: 'virtio-blk',
    media: 'disk',
    readonly: false,
    snapshot: false,
    bootindex: undefined,
    cache: 'writeback',
    aio: undefined,
    discard: false,
    serial: undefined,
  };
}

function readSource(f: Field, text: string, mustBeUri = false): DiskSource {
  if (/^nbds?(\+tcp|\+unix)?:\/\//i.test(text)) return readNbdUri(f, text);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text) || mustBeUri) {
    f.fail(
      `unsupported URI ${JSON.stringify(text)}; disks take a path or an nbd://, nbd+unix:// URI`,
    );
  }
  return { kind: 'file', path: text };
}

/**
 * An NBD URI as QEMU's nbd driver reads it (block/nbd.c nbd_parse_uri): nbd[+tcp]://host[:port]/
 * export or nbd+unix:///export?socket=/path, with no other query parameter. The URI itself is
 * parsed by src/nbd (NBD's uri.md); this adds what QEMU refuses and what the launcher cannot
 * pass on, so nothing in a URI is silently dropped.
 */
export function readNbdUri(f: Field, text: string): DiskSource {
  // QEMU 7.2 spells plain TCP nbd:// or nbd+tcp://; uri.md (and src/nbd) only the former.
  const scheme = /^([^:]*):/.exec(text)![1]!.toLowerCase();
  if (scheme.startsWith('nbds')) {
    // QEMU's nbd driver takes TLS only as -object tls-creds-x509/-psk plus tls-creds= on the
    // blockdev, with QEMU's own credential directory layout, not from the URI.
    f.fail(
      `${JSON.stringify(text)}: NBD over TLS (${scheme}://) is not supported by the launcher yet; ` +
        'serve the export without TLS (e.g. on a unix socket: nbd+unix:///export?socket=/path)',
    );
  }
  let uri: NbdUri;
  try {
    uri = parseNbdUri(scheme === 'nbd+tcp' ? `nbd${text.slice('nbd+tcp'.length)}` : text);
  } catch (err) {
    if (err instanceof InvalidArgumentError) f.fail(err.message);
    throw err;
  }
  // src/nbd also takes libnbd's tls-* and x-* parameters and a user name; QEMU none of them.
  const query = /^[^?#]*\?([^#]*)/.exec(text)?.[1] ?? '';
  const extra = query
    .split('&')
    .map((kv) => decodeURIComponent(kv.split('=')[0]!))
    .find((k) => k !== '' && k !== 'socket');
  const unusable =
    extra !== undefined
      ? `query parameter '${extra}'`
      : uri.username !== undefined
        ? 'user name'
        : undefined;
  if (unusable) {
    f.fail(
      `${JSON.stringify(text)}: QEMU takes no ${unusable} in an NBD URI ` +
        '(nbd://host[:port]/export, nbd+unix:///export?socket=/path)',
    );
  }
  const exportName = uri.exportName === '' ? undefined : uri.exportName;
  if (uri.transport === 'unix') {
    return {
      kind: 'nbd',
      uri: text,
      server: { type: 'unix', path: uri.socket! },
      export: exportName,
      tls: false,
    };
  }
  return {
    kind: 'nbd',
    uri: text,
    server: { type: 'inet', host: uri.host!, port: String(uri.port!) },
    export: exportName,
    tls: false,
  };
}

export type { CacheMode, DiskInterface };
