import { describe, expect, it } from 'vitest';
import {
  EnvironmentError,
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
} from '../../src/core/index.js';
import { nbdErrnoToCode, toNbdErrno } from '../../src/nbd/errno.js';

describe('toNbdErrno', () => {
  const sys = (code: string) => Object.assign(new Error(code), { code });
  it.each([
    ['EPERM', 1],
    ['EROFS', 1],
    ['EIO', 5],
    ['ENOMEM', 12],
    ['ENOSPC', 28],
    ['EDQUOT', 28],
    ['EFBIG', 28],
    ['EOVERFLOW', 75],
    ['ESHUTDOWN', 108],
    ['EINVAL', 22],
    ['EBADF', 22],
  ])('%s -> %i', (code, want) => {
    expect(toNbdErrno(sys(code))).toBe(want);
    expect(toNbdErrno(new EnvironmentError('x', { errno: code }))).toBe(want);
  });

  it('ENOTSUP only for FAST_ZERO requests (proto.md)', () => {
    expect(toNbdErrno(new NotSupportedError('x'), { fastZero: true })).toBe(95);
    expect(toNbdErrno(new NotSupportedError('x'))).toBe(22);
    expect(toNbdErrno(sys('EOPNOTSUPP'), { fastZero: true })).toBe(95);
    expect(toNbdErrno(sys('EOPNOTSUPP'))).toBe(22);
  });

  it('corrupt data is EIO, caller errors EINVAL, unknown throws EIO', () => {
    expect(toNbdErrno(new CorruptImageError('bad L2'))).toBe(5);
    expect(toNbdErrno(new InvalidArgumentError('range'))).toBe(22);
    expect(toNbdErrno(new TypeError('bug'))).toBe(5);
  });

  it('keeps an NBD error from a proxied export', () => {
    expect(toNbdErrno(Object.assign(new Error('x'), { nbdErrno: 28 }))).toBe(28);
  });

  it('maps wire values back to errno names; unknown is EINVAL', () => {
    expect(nbdErrnoToCode(1)).toBe('EPERM');
    expect(nbdErrnoToCode(28)).toBe('ENOSPC');
    expect(nbdErrnoToCode(1234)).toBe('EINVAL');
  });
});
