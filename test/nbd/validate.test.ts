// validateRequest is pure: a table of requests and the verdict qemu would give.
import { describe, expect, it } from 'vitest';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_REQUEST_MAGIC,
} from '../../src/nbd/protocol.js';
import { validateRequest, type TransmissionState } from '../../src/nbd/transmission.js';
import type { NbdRequest } from '../../src/nbd/wire.js';

const st: TransmissionState = {
  size: 1 << 20,
  readOnly: false,
  structured: true,
  metaContexts: 1,
  maxPayload: 32 << 20,
};

function req(type: number, offset: number, length: number, flags = 0): NbdRequest {
  return { magic: NBD_REQUEST_MAGIC, type, offset, length, flags, cookie: 1n };
}

describe('validateRequest', () => {
  const cases: [string, NbdRequest, Partial<TransmissionState>, number | 'ok', string?][] = [
    ['read in range', req(NBD_CMD_READ, 0, 4096), {}, 'ok'],
    ['zero-length read', req(NBD_CMD_READ, 0, 0), {}, 'ok'],
    ['read ending exactly at EOF', req(NBD_CMD_READ, (1 << 20) - 1, 1), {}, 'ok'],
    ['read past EOF', req(NBD_CMD_READ, (1 << 20) - 1, 2), {}, NBD_EINVAL, 'operation past EOF'],
    ['read offset past EOF', req(NBD_CMD_READ, 1 << 21, 0), {}, NBD_EINVAL],
    ['huge offset does not wrap', req(NBD_CMD_READ, 2 ** 64 - 4096, 4096), {}, NBD_EINVAL],
    ['write past EOF is ENOSPC', req(NBD_CMD_WRITE, 1 << 20, 1), {}, NBD_ENOSPC],
    ['zero past EOF is ENOSPC', req(NBD_CMD_WRITE_ZEROES, 1 << 20, 1), {}, NBD_ENOSPC],
    ['trim past EOF is EINVAL', req(NBD_CMD_TRIM, 1 << 20, 1), {}, NBD_EINVAL],
    [
      'oversized read',
      req(NBD_CMD_READ, 0, (32 << 20) + 1),
      { size: 1 << 30 },
      NBD_EINVAL,
      'larger than max len',
    ],
    ['oversized write', req(NBD_CMD_WRITE, 0, (32 << 20) + 1), { size: 1 << 30 }, NBD_EINVAL],
    ['oversized cache', req(NBD_CMD_CACHE, 0, (32 << 20) + 1), { size: 1 << 30 }, NBD_EINVAL],
    ['large trim is fine', req(NBD_CMD_TRIM, 0, 1 << 30), { size: 1 << 30 }, 'ok'],
    ['large zero is fine', req(NBD_CMD_WRITE_ZEROES, 0, 1 << 30), { size: 1 << 30 }, 'ok'],
    ['write on read-only', req(NBD_CMD_WRITE, 0, 1), { readOnly: true }, NBD_EPERM, 'read-only'],
    ['trim on read-only', req(NBD_CMD_TRIM, 0, 1), { readOnly: true }, NBD_EPERM],
    ['zero on read-only', req(NBD_CMD_WRITE_ZEROES, 0, 1), { readOnly: true }, NBD_EPERM],
    ['flush on read-only', req(NBD_CMD_FLUSH, 0, 0), { readOnly: true }, 'ok'],
    ['FUA on read', req(NBD_CMD_READ, 0, 1, NBD_CMD_FLAG_FUA), {}, 'ok'],
    ['DF on structured read', req(NBD_CMD_READ, 0, 1, NBD_CMD_FLAG_DF), {}, 'ok'],
    [
      'DF without structured replies',
      req(NBD_CMD_READ, 0, 1, NBD_CMD_FLAG_DF),
      { structured: false },
      NBD_EINVAL,
    ],
    [
      'NO_HOLE|FAST_ZERO on zero',
      req(NBD_CMD_WRITE_ZEROES, 0, 1, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO),
      {},
      'ok',
    ],
    [
      'NO_HOLE on write',
      req(NBD_CMD_WRITE, 0, 1, NBD_CMD_FLAG_NO_HOLE),
      {},
      NBD_EINVAL,
      'unsupported flags for command write (got 0x2)',
    ],
    ['REQ_ONE on block status', req(NBD_CMD_BLOCK_STATUS, 0, 1, NBD_CMD_FLAG_REQ_ONE), {}, 'ok'],
    ['REQ_ONE on read', req(NBD_CMD_READ, 0, 1, NBD_CMD_FLAG_REQ_ONE), {}, NBD_EINVAL],
    ['unknown flag bit', req(NBD_CMD_READ, 0, 1, 0x8000), {}, NBD_EINVAL],
    ['unknown command', req(42, 0, 0), {}, NBD_EINVAL, 'invalid request type (42) received'],
    [
      'block status length 0',
      req(NBD_CMD_BLOCK_STATUS, 0, 0),
      {},
      NBD_EINVAL,
      'need non-zero length',
    ],
    [
      'block status without contexts',
      req(NBD_CMD_BLOCK_STATUS, 0, 1),
      { metaContexts: 0 },
      NBD_EINVAL,
      'not negotiated',
    ],
  ];
  for (const [title, r, over, want, reason] of cases) {
    it(title, () => {
      const v = validateRequest(r, { ...st, ...over });
      if (want === 'ok') {
        expect(v).toEqual({ ok: true });
      } else {
        expect(v.ok).toBe(false);
        if (!v.ok) {
          expect(v.errno).toBe(want);
          if (reason) expect(v.reason).toContain(reason);
        }
      }
    });
  }
});
