import { describe, expect, it } from 'vitest';
import {
  decodeFirmwareVolumeHeader,
  encodeFirmwareVolumeHeader,
  findFirmwareVolumes,
  formatGuid,
  isBlankImage,
  parseGuid,
  validateFirmwareVolumeHeader,
} from '../../src/edk2/firmware-volume.js';
import { FV_GUIDS } from '../../src/edk2/constants.js';
import { armCode, flashImage, memReader, ovmfCode, varsImage } from './fv-fixtures.js';

// The first 72 bytes of Debian's OVMF_VARS_4M.fd (ovmf 2022.11-6+deb12u2), by hand.
const OVMF_VARS_HEADER = Buffer.from(
  '00000000000000000000000000000000' + // ZeroVector
    '8d2bf1ff96768b4ca9852747075b4f50' + // FileSystemGuid (EFI_SYSTEM_NV_DATA_FV_GUID)
    '0040080000000000' + // FvLength 0x84000
    '5f465648' + // "_FVH"
    'fffe0400' + // Attributes 0x0004feff
    '4800' + // HeaderLength 72
    'afb8' + // Checksum 0xb8af
    '0000' + // ExtHeaderOffset
    '00' + // Reserved
    '02' + // Revision
    '8400000000100000' + // BlockMap {132, 4096}
    '0000000000000000', // terminator
  'hex',
);

describe('EFI_FIRMWARE_VOLUME_HEADER', () => {
  it('decodes a real header and validates it', () => {
    const h = decodeFirmwareVolumeHeader(OVMF_VARS_HEADER);
    expect(h).toMatchObject({
      fileSystemGuid: FV_GUIDS.nvram,
      fvLength: 0x84000,
      attributes: 0x4feff,
      headerLength: 72,
      checksum: 0xb8af,
      revision: 2,
      blockMap: [{ numBlocks: 132, length: 4096 }],
      checksumSum: 0,
    });
    expect(() => validateFirmwareVolumeHeader(h)).not.toThrow();
  });

  it('encodes the same bytes it decodes', () => {
    const enc = encodeFirmwareVolumeHeader({
      fvLength: 0x84000,
      fileSystemGuid: FV_GUIDS.nvram,
      attributes: 0x4feff,
      blockSize: 4096,
    });
    expect(Buffer.from(enc).toString('hex')).toBe(OVMF_VARS_HEADER.toString('hex'));
  });

  it('round-trips GUIDs', () => {
    for (const g of Object.values(FV_GUIDS)) expect(formatGuid(parseGuid(g))).toBe(g);
  });

  const corrupt = (patch: (b: Buffer) => void) => {
    const b = Buffer.from(OVMF_VARS_HEADER);
    patch(b);
    return () => validateFirmwareVolumeHeader(decodeFirmwareVolumeHeader(b));
  };

  it('names the field that is wrong', () => {
    expect(corrupt((b) => b.write('_FVX', 40, 'latin1'))).toThrow(
      /Signature is 0x5856465f, expected '_FVH'/,
    );
    expect(corrupt((b) => b.writeUInt8(b.readUInt8(50) ^ 1, 50))).toThrow(
      /Checksum 0xb8ae is wrong/,
    );
    expect(corrupt((b) => (b[55] = 1))).toThrow(/Revision is 1, expected 2/);
    expect(corrupt((b) => b.writeUInt16LE(70, 48))).toThrow(/HeaderLength is 70/);
    expect(corrupt((b) => b.writeUInt32LE(131, 56))).toThrow(
      /BlockMap covers 536576 bytes, less than FvLength 540672/,
    );
    expect(() =>
      validateFirmwareVolumeHeader(decodeFirmwareVolumeHeader(OVMF_VARS_HEADER), 0x1000),
    ).toThrow(/FvLength is 540672, but only 4096 bytes follow/);
  });

  it('reports truncation with the field name, not a RangeError', () => {
    expect(() => decodeFirmwareVolumeHeader(OVMF_VARS_HEADER.subarray(0, 45))).toThrow(
      /truncated firmware volume header field Attributes/,
    );
    expect(() => decodeFirmwareVolumeHeader(OVMF_VARS_HEADER.subarray(0, 64))).toThrow(/BlockMap/);
  });

  it('bounds a block map without terminator', () => {
    const b = Buffer.alloc(8192, 1);
    OVMF_VARS_HEADER.copy(b, 0, 0, 56);
    expect(() => validateFirmwareVolumeHeader(decodeFirmwareVolumeHeader(b))).toThrow(
      /invalid firmware volume header/,
    );
  });
});

describe('findFirmwareVolumes', () => {
  it('finds the code volume of an ArmVirtQemu image at 0x1000', async () => {
    const vols = await findFirmwareVolumes(memReader(armCode()));
    expect(vols.map((v) => [v.offset, v.kind])).toEqual([[0x1000, 'ffs2']]);
  });

  it('walks chained volumes (OVMF_CODE)', async () => {
    const vols = await findFirmwareVolumes(memReader(ovmfCode()));
    expect(vols.map((v) => [v.offset, v.fvLength])).toEqual([
      [0, 0x20000],
      [0x20000, 0x10000],
    ]);
  });

  it('ignores a stray _FVH whose header does not validate', async () => {
    const img = flashImage(0x20000, [], 0);
    img.set(Buffer.from('_FVH'), 0x800 + 40);
    img.set(Buffer.from('_FVH'), 0x1003);
    expect(await findFirmwareVolumes(memReader(img))).toEqual([]);
  });

  it('finds a volume past the first 1 MiB window and in padded images', async () => {
    const img = flashImage(
      0x300000,
      [{ offset: 0x200000, length: 0x10000, guid: FV_GUIDS.nvram }],
      0,
    );
    const vols = await findFirmwareVolumes(memReader(img));
    expect(vols.map((v) => [v.offset, v.kind])).toEqual([[0x200000, 'nvram']]);
  });

  it('detects blank (zero or erased) flash', async () => {
    expect(await isBlankImage(memReader(new Uint8Array(0x3000)))).toBe(true);
    expect(await isBlankImage(memReader(new Uint8Array(0x3000).fill(0xff)))).toBe(true);
    const dirty = new Uint8Array(0x3000);
    dirty[0x2fff] = 1;
    expect(await isBlankImage(memReader(dirty))).toBe(false);
    expect(await isBlankImage(memReader(varsImage()))).toBe(false);
  });
});
