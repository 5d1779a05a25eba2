// EFI_FIRMWARE_VOLUME_HEADER (UEFI PI spec vol. 3, 3.2.1 "Firmware Volume Header"), as a
// decode / validate / encode trio, plus a scanner that finds the volumes inside a flash device
// image (.fd). An ArmVirtQemu QEMU_EFI.fd starts with a branch instruction and carries its FV at
// 0x1000; OVMF_CODE.fd chains a PEI and a DXE volume from offset 0; a vars image is one volume
// with the NV-data GUID. The layout is little-endian:
//   0 ZeroVector[16]  16 FileSystemGuid  32 FvLength u64  40 Signature '_FVH'  44 Attributes u32
//   48 HeaderLength u16  50 Checksum u16  52 ExtHeaderOffset u16  54 Reserved u8  55 Revision u8
//   56 BlockMap[] {NumBlocks u32, Length u32} ... terminated by {0, 0}

import { ByteReader, ByteWriter, CorruptImageError, bigToSafe } from '../core/index.js';
import {
  FVH_MIN_HEADER_LENGTH,
  FVH_REVISION,
  FVH_SIGNATURE,
  FVH_SIGNATURE_OFFSET,
  FV_GUIDS,
} from './constants.js';

export interface FvBlockMapEntry {
  numBlocks: number;
  length: number;
}

export interface FirmwareVolumeHeader {
  fileSystemGuid: string;
  fvLength: number;
  signature: number;
  attributes: number;
  headerLength: number;
  checksum: number;
  extHeaderOffset: number;
  revision: number;
  blockMap: FvBlockMapEntry[];
  /** Sum of the header's 16-bit words; 0 when the checksum is right. */
  checksumSum: number;
}

export type FirmwareVolumeKind = 'ffs2' | 'ffs3' | 'nvram' | 'unknown';

/** A header found inside an image, with its position. */
export interface FirmwareVolume extends FirmwareVolumeHeader {
  offset: number;
  kind: FirmwareVolumeKind;
}

/** Upper bound for HeaderLength we accept; real headers are 72-120 bytes. */
const MAX_HEADER_LENGTH = 4096;
/** Block-map entries we walk before calling the map hostile. */
const MAX_BLOCK_MAP_ENTRIES = (MAX_HEADER_LENGTH - 56) / 8;

/** Format an EFI_GUID (u32 LE, u16 LE, u16 LE, 8 bytes) in registry form. */
export function formatGuid(b: Uint8Array): string {
  const r = new ByteReader(b, 'GUID');
  const d1 = r.u32le().toString(16).padStart(8, '0');
  const d2 = r.u16le().toString(16).padStart(4, '0');
  const d3 = r.u16le().toString(16).padStart(4, '0');
  const rest = Array.from(r.bytes(8), (x) => x.toString(16).padStart(2, '0')).join('');
  return `${d1}-${d2}-${d3}-${rest.slice(0, 4)}-${rest.slice(4)}`;
}

/** Inverse of formatGuid. */
export function parseGuid(text: string): Uint8Array {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(text);
  if (!m) throw new RangeError(`not a GUID: ${text}`);
  const w = ByteWriter.alloc(16);
  w.u32le(parseInt(m[1]!, 16)).u16le(parseInt(m[2]!, 16)).u16le(parseInt(m[3]!, 16));
  const tail = m[4]! + m[5]!;
  for (let i = 0; i < 16; i += 2) w.u8(parseInt(tail.slice(i, i + 2), 16));
  return w.buf;
}

export function volumeKind(guid: string): FirmwareVolumeKind {
  for (const [kind, g] of Object.entries(FV_GUIDS))
    if (g === guid) return kind as FirmwareVolumeKind;
  return 'unknown';
}

/** Sum of the little-endian 16-bit words of `buf` modulo 2^16. */
function sum16(buf: Uint8Array): number {
  let s = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) s = (s + (buf[i]! | (buf[i + 1]! << 8))) & 0xffff;
  return s;
}

/**
 * Read the header at the start of `buf`. Throws CorruptImageError naming the field when `buf`
 * is too short; does not judge the values (validateFirmwareVolumeHeader does).
 */
export function decodeFirmwareVolumeHeader(buf: Uint8Array): FirmwareVolumeHeader {
  const r = new ByteReader(buf, 'firmware volume header');
  r.skip(16, 'ZeroVector');
  const fileSystemGuid = formatGuid(r.bytes(16, 'FileSystemGuid'));
  const fvLength = bigToSafe(r.u64lebig('FvLength'), 'firmware volume header field FvLength');
  const signature = r.u32le('Signature');
  const attributes = r.u32le('Attributes');
  const headerLength = r.u16le('HeaderLength');
  const checksum = r.u16le('Checksum');
  const extHeaderOffset = r.u16le('ExtHeaderOffset');
  r.skip(1, 'Reserved');
  const revision = r.u8('Revision');
  const blockMap: FvBlockMapEntry[] = [];
  // The map runs to its {0,0} terminator, which must lie inside HeaderLength.
  for (let i = 0; i < MAX_BLOCK_MAP_ENTRIES; i++) {
    const numBlocks = r.u32le('BlockMap.NumBlocks');
    const length = r.u32le('BlockMap.Length');
    if (numBlocks === 0 && length === 0) break;
    blockMap.push({ numBlocks, length });
  }
  const hdrLen = Math.min(headerLength, buf.length);
  const checksumSum = sum16(buf.subarray(0, hdrLen & ~1));
  return {
    fileSystemGuid,
    fvLength,
    signature,
    attributes,
    headerLength,
    checksum,
    extHeaderOffset,
    revision,
    blockMap,
    checksumSum,
  };
}

/**
 * Check a decoded header in the order the PI spec defines it; the message names the field and
 * the value found. `available` bounds FvLength (the bytes left in the image from the header).
 */
export function validateFirmwareVolumeHeader(
  h: FirmwareVolumeHeader,
  available = Number.MAX_SAFE_INTEGER,
): void {
  const bad = (m: string) => new CorruptImageError(`invalid firmware volume header: ${m}`);
  if (h.signature !== FVH_SIGNATURE)
    throw bad(`Signature is 0x${h.signature.toString(16).padStart(8, '0')}, expected '_FVH'`);
  if (h.revision !== FVH_REVISION) throw bad(`Revision is ${h.revision}, expected ${FVH_REVISION}`);
  if (h.headerLength < FVH_MIN_HEADER_LENGTH || h.headerLength > MAX_HEADER_LENGTH)
    throw bad(
      `HeaderLength is ${h.headerLength}, expected ${FVH_MIN_HEADER_LENGTH}..${MAX_HEADER_LENGTH}`,
    );
  if (h.headerLength % 2 !== 0)
    throw bad(`HeaderLength is ${h.headerLength}, expected an even value`);
  if (h.fvLength < h.headerLength)
    throw bad(`FvLength is ${h.fvLength}, smaller than HeaderLength`);
  if (h.fvLength > available)
    throw bad(`FvLength is ${h.fvLength}, but only ${available} bytes follow the header`);
  if (h.blockMap.length === 0) throw bad('BlockMap is empty');
  // Usually the map covers exactly FvLength, but real varstores disagree: Debian's
  // AAVMF_VARS.ms.fd maps the whole 64 MiB flash for a 768 KiB volume, and edk2's own header
  // checks (QemuFlashFvbServicesRuntimeDxe) accept it. A map smaller than the volume is wrong.
  const mapped = h.blockMap.reduce((n, e) => n + e.numBlocks * e.length, 0);
  if (mapped < h.fvLength)
    throw bad(`BlockMap covers ${mapped} bytes, less than FvLength ${h.fvLength}`);
  if (56 + (h.blockMap.length + 1) * 8 > h.headerLength)
    throw bad(`BlockMap runs past HeaderLength ${h.headerLength}`);
  if (h.checksumSum !== 0)
    throw bad(
      `Checksum 0x${h.checksum.toString(16).padStart(4, '0')} is wrong (header words sum to 0x${h.checksumSum.toString(16).padStart(4, '0')}, expected 0)`,
    );
}

export interface EncodeFirmwareVolumeOptions {
  fileSystemGuid?: string;
  attributes?: number;
  blockSize?: number;
  fvLength: number;
  extHeaderOffset?: number;
}

/** Build a valid header (checksum filled in): the mirror of decode, used for fixtures. */
export function encodeFirmwareVolumeHeader(o: EncodeFirmwareVolumeOptions): Uint8Array {
  const blockSize = o.blockSize ?? 0x1000;
  if (o.fvLength % blockSize !== 0)
    throw new RangeError('fvLength must be a multiple of blockSize');
  const w = ByteWriter.alloc(FVH_MIN_HEADER_LENGTH);
  w.zeros(16).bytes(parseGuid(o.fileSystemGuid ?? FV_GUIDS.ffs2));
  w.u64le(o.fvLength)
    .u32le(FVH_SIGNATURE)
    .u32le(o.attributes ?? 0x0004feff);
  w.u16le(FVH_MIN_HEADER_LENGTH)
    .u16le(0)
    .u16le(o.extHeaderOffset ?? 0)
    .u8(0)
    .u8(FVH_REVISION);
  w.u32le(o.fvLength / blockSize)
    .u32le(blockSize)
    .u32le(0)
    .u32le(0);
  const sum = sum16(w.buf);
  const checksum = (0x10000 - sum) & 0xffff;
  w.view.setUint16(50, checksum, true);
  return w.buf;
}

/** Random access to an image's guest-visible bytes (a raw file, or a decoded qcow2). */
export interface ImageReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
}

const SIG_BYTES = new Uint8Array([0x5f, 0x46, 0x56, 0x48]); // "_FVH"
const WINDOW = 1 << 20;
/** A flash device holds a handful of volumes; more means we are matching noise. */
const MAX_VOLUMES = 64;

/**
 * Find the firmware volumes of a flash image: candidates are 8-aligned places where `_FVH`
 * sits at +40; a candidate counts only if its header validates, and the scan resumes after
 * the volume's end (so signatures inside a volume's files are not mistaken for headers).
 */
export async function findFirmwareVolumes(
  image: ImageReader,
  options: { limit?: number; signal?: AbortSignal } = {},
): Promise<FirmwareVolume[]> {
  const limit = options.limit ?? MAX_VOLUMES;
  const found: FirmwareVolume[] = [];
  let pos = 0;
  while (pos + FVH_MIN_HEADER_LENGTH <= image.size && found.length < limit) {
    options.signal?.throwIfAborted();
    const len = Math.min(WINDOW + FVH_MIN_HEADER_LENGTH, image.size - pos);
    const win = await image.read(pos, len);
    let advanced = false;
    let from = FVH_SIGNATURE_OFFSET;
    for (;;) {
      const i = indexOf(win, SIG_BYTES, from);
      if (i < 0) break;
      const start = pos + i - FVH_SIGNATURE_OFFSET;
      from = i + 1;
      if (start % 8 !== 0) continue;
      const vol = await tryVolumeAt(image, start);
      if (vol) {
        found.push(vol);
        pos = start + vol.fvLength;
        advanced = true;
        break;
      }
    }
    if (!advanced) pos += Math.max(1, len - FVH_MIN_HEADER_LENGTH);
  }
  return found;
}

async function tryVolumeAt(
  image: ImageReader,
  offset: number,
): Promise<FirmwareVolume | undefined> {
  const hdr = await image.read(offset, Math.min(MAX_HEADER_LENGTH, image.size - offset));
  try {
    const h = decodeFirmwareVolumeHeader(hdr);
    validateFirmwareVolumeHeader(h, image.size - offset);
    return { ...h, offset, kind: volumeKind(h.fileSystemGuid) };
  } catch (err) {
    if (err instanceof CorruptImageError) return undefined;
    throw err;
  }
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  return Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength).indexOf(needle, from);
}

/** True when every byte of the image is `0x00` or every byte is `0xff` (erased flash). */
export async function isBlankImage(image: ImageReader, signal?: AbortSignal): Promise<boolean> {
  let fill: number | undefined;
  for (let pos = 0; pos < image.size; pos += WINDOW) {
    signal?.throwIfAborted();
    const buf = await image.read(pos, Math.min(WINDOW, image.size - pos));
    fill ??= buf[0];
    if (fill !== 0 && fill !== 0xff) return false;
    for (let i = 0; i < buf.length; i++) if (buf[i] !== fill) return false;
  }
  return true;
}
