// In-memory qcow2 images for the check unit tests: created and written by the engine (laid out
// as qemu-img lays them out), then damaged with byte patches like the qemu-iotests do.

import { MemoryStorage } from '../../src/block/memory-storage.js';
import { checkImage, type CheckImageOutcome } from '../../src/img/check.js';
import { createQcow2, type Qcow2CreateOptions } from '../../src/qcow2/create.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import type { Qcow2Device } from '../../src/qcow2/qcow2-device.js';

export const FILENAME = 'mem.qcow2';

// Layout of a fresh 64 KiB-cluster image (as qemu-img create makes it).
export const RT = 0x10000;
export const RB = 0x20000;
export const L1 = 0x30000;
export const L2 = 0x40000;
export const DATA = 0x50000;

export async function newImage(
  options: Partial<Qcow2CreateOptions> = {},
  write?: (dev: Qcow2Device) => Promise<void>,
): Promise<MemoryStorage> {
  const storage = new MemoryStorage(0, FILENAME);
  const dev = await createQcow2(storage, { size: 64 << 20, ...options }, { filename: FILENAME });
  await write?.(dev);
  await dev.close();
  return storage;
}

/** 64 KiB of 0x2a at guest offset 0: L2 table at 0x40000, data at 0x50000. */
export const withData = (options: Partial<Qcow2CreateOptions> = {}) =>
  newImage(options, (dev) => dev.write(new Uint8Array(65536).fill(0x2a), 0));

export async function poke(
  storage: MemoryStorage,
  offset: number,
  bytes: Uint8Array,
): Promise<void> {
  await storage.write(bytes, offset);
}

export function u64(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v));
  return b;
}

export function u16(v: number): Uint8Array {
  return new Uint8Array([v >> 8, v & 0xff]);
}

export const entry = (offset: number, copied = true): Uint8Array =>
  u64((copied ? 1n << 63n : 0n) | BigInt(offset));

/** Open for a check: check mode, read-write when repairing. */
export function openForCheck(storage: MemoryStorage, writable: boolean): Promise<Qcow2Device> {
  return openQcow2(storage, { filename: FILENAME, readOnly: !writable, checkMode: true });
}

/** img_check on the in-memory image; the stderr lines as qemu-img prints them. */
export async function check(
  storage: MemoryStorage,
  repair?: 'leaks' | 'all',
): Promise<CheckImageOutcome & { lines: string[] }> {
  const dev = await openForCheck(storage, repair !== undefined);
  try {
    const out = await checkImage(dev, { repair });
    // A report is printed with the program name; its hint lines follow as they are.
    const lines = out.messages.flatMap((m) =>
      `${m.report ? 'qemu-img: ' : ''}${m.text}`.split('\n'),
    );
    if (out.error) lines.push(`qemu-img: ${out.error}`);
    return { ...out, lines };
  } finally {
    await dev.close();
  }
}

export async function readHeaderU64(storage: MemoryStorage, offset: number): Promise<bigint> {
  const b = new Uint8Array(8);
  await storage.read(b, offset);
  return new DataView(b.buffer).getBigUint64(0);
}
