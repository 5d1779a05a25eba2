// Guest range validation shared by every driver: safe integers, non-negative, within the device.
import { InvalidArgumentError } from '../core/index.js';

export function assertRange(what: string, offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new InvalidArgumentError(`${what}: invalid range offset=${offset} length=${length}`, {
      code: 'VMF_RANGE',
    });
  }
  if (offset + length > size) {
    throw new InvalidArgumentError(
      `${what}: range ${offset}+${length} is beyond the end of the device (${size} bytes)`,
      { code: 'VMF_RANGE' },
    );
  }
}
