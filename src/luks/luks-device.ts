// A LUKS image opened for inspection only (qemu-img info opens with BDRV_O_NO_IO, so no key is
// needed). vmforge does not decrypt: data access fails with a clear message.

import type { BlockCapabilities, BlockDevice, BlockExtent } from '../block/device.js';
import type { Storage } from '../block/storage.js';
import { NotSupportedError } from '../core/index.js';
import type { LuksInfo } from '../img/qapi-types.js';
import { readLuksInfo } from './luks-header.js';

function noData(): never {
  throw new NotSupportedError(
    'vmforge cannot decrypt LUKS images (use qemu-img with a key secret)',
    {
      code: 'VMF_LUKS',
    },
  );
}

export class LuksInfoDevice implements BlockDevice {
  readonly format = 'luks' as const;
  readonly filename: string;
  readonly storage: Storage;
  readonly backing = undefined;
  readonly size: number;
  readonly luks: LuksInfo;
  readonly capabilities: BlockCapabilities = {
    readOnly: true,
    fastZero: false,
    discard: false,
    zeroInit: false,
    multiConn: false,
    allocationGranularity: 512,
    requestAlignment: 512,
    hasAllocationStatus: false,
  };

  private constructor(storage: Storage, filename: string, luks: LuksInfo, size: number) {
    this.storage = storage;
    this.filename = filename;
    this.luks = luks;
    this.size = size;
  }

  static async open(storage: Storage, filename: string): Promise<LuksInfoDevice> {
    const luks = await readLuksInfo(storage, 0);
    const size = Math.max(0, (await storage.size()) - luks['payload-offset']);
    return new LuksInfoDevice(storage, filename, luks, size);
  }

  read(): Promise<void> {
    return Promise.reject(noData());
  }
  write(): Promise<void> {
    return Promise.reject(noData());
  }
  writeZeroes(): Promise<void> {
    return Promise.reject(noData());
  }
  discard(): Promise<void> {
    return Promise.reject(noData());
  }
  blockStatus(): Promise<BlockExtent[]> {
    return Promise.reject(noData());
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    await this.storage.close();
  }
}
