// The LUKS1 header (of a LUKS image, or inside an encrypted qcow2), decoded for `qemu-img info`
// only (vmforge does not decrypt). Field layout: LUKS On-Disk Format Specification 1.2.3; the reported values follow
// QEMU's qcrypto_block_luks_get_info() (crypto/block-luks.c).

import type { Storage } from '../block/storage.js';
import { CorruptImageError } from '../core/index.js';
import type { LuksInfo, LuksSlotInfo } from '../img/qapi-types.js';

const LUKS_MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
const HEADER_SIZE = 592;
const SLOT_ACTIVE = 0x00ac71f3;
const SECTOR = 512;

function cstr(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return new TextDecoder().decode(nul >= 0 ? b.subarray(0, nul) : b);
}

/** QEMU's QCryptoCipherAlgorithm name for a LUKS cipher name and key size. */
function cipherAlg(name: string, keyBytes: number): string {
  const bits = keyBytes * 8;
  switch (name) {
    case 'aes':
    case 'serpent':
    case 'twofish':
      return `${name}-${bits}`;
    case 'cast5':
      return 'cast5-128';
    default:
      return name;
  }
}

export async function readLuksInfo(storage: Storage, offset: number): Promise<LuksInfo> {
  const buf = new Uint8Array(HEADER_SIZE);
  await storage.read(buf, offset);
  if (!LUKS_MAGIC.every((b, i) => buf[i] === b)) {
    throw new CorruptImageError('Volume is not in LUKS format');
  }
  const view = new DataView(buf.buffer);
  const version = view.getUint16(6);
  if (version !== 1) throw new CorruptImageError(`Unsupported LUKS version ${version}`);
  const cipherName = cstr(buf.subarray(8, 40));
  const cipherModeSpec = cstr(buf.subarray(40, 72));
  const hashSpec = cstr(buf.subarray(72, 104));
  const payloadOffsetSector = view.getUint32(104);
  let keyBytes = view.getUint32(108);
  const masterKeyIters = view.getUint32(164);
  const uuid = cstr(buf.subarray(168, 208));

  // "xts-plain64" -> mode xts, ivgen plain64; "cbc-essiv:sha256" -> cbc, essiv, sha256.
  const [mode = '', ivgenSpec = ''] = cipherModeSpec.split('-');
  const [ivgenAlg = '', ivgenHash] = ivgenSpec.split(':');
  if (mode === 'xts') keyBytes /= 2; // XTS keys hold two cipher keys
  const slots: LuksSlotInfo[] = [];
  for (let i = 0; i < 8; i++) {
    const base = 208 + i * 48;
    const active = view.getUint32(base) === SLOT_ACTIVE;
    const slot: LuksSlotInfo = { active, 'key-offset': view.getUint32(base + 40) * SECTOR };
    if (active) {
      slot.iters = view.getUint32(base + 4);
      slot.stripes = view.getUint32(base + 44);
    }
    // QAPI order: active, iters, stripes, key-offset
    slots.push(
      active
        ? { active, iters: slot.iters!, stripes: slot.stripes!, 'key-offset': slot['key-offset'] }
        : { active, 'key-offset': slot['key-offset'] },
    );
  }
  const info: LuksInfo = {
    'cipher-alg': cipherAlg(cipherName, keyBytes),
    'cipher-mode': mode,
    'ivgen-alg': ivgenAlg,
    'hash-alg': hashSpec,
    'payload-offset': payloadOffsetSector * SECTOR,
    'master-key-iters': masterKeyIters,
    uuid,
    slots,
  };
  if (ivgenAlg === 'essiv' && ivgenHash) {
    return {
      'cipher-alg': info['cipher-alg'],
      'cipher-mode': info['cipher-mode'],
      'ivgen-alg': info['ivgen-alg'],
      'ivgen-hash-alg': ivgenHash,
      'hash-alg': info['hash-alg'],
      'payload-offset': info['payload-offset'],
      'master-key-iters': info['master-key-iters'],
      uuid: info.uuid,
      slots: info.slots,
    };
  }
  return info;
}
