// Codecs against hand-written hex (proto.md layouts), and decode(encode(x)) == x.
import { describe, expect, it } from 'vitest';
import {
  decodeClientFlags,
  decodeGreeting,
  decodeInfoReply,
  decodeOptionHeader,
  decodeReplyHeader,
  decodeRepMetaContext,
  decodeRepServer,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeHoleChunk,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeOption,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeRequest,
  encodeSimpleReply,
} from '../../src/nbd/wire.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

describe('NBD wire codecs', () => {
  it('greeting: NBDMAGIC IHAVEOPT flags', () => {
    expect(hex(encodeGreeting(3))).toBe('4e42444d41474943' + '49484156454f5054' + '0003');
    expect(decodeGreeting(encodeGreeting(1)).flags).toBe(1);
  });

  it('option header and reply', () => {
    expect(hex(encodeOption(7, Uint8Array.of(0xaa)))).toBe(
      '49484156454f5054' + '00000007' + '00000001' + 'aa',
    );
    expect(decodeOptionHeader(bytes('49484156454f5054 00000003 00000000'))).toEqual({
      magic: 0x49484156454f5054n,
      option: 3,
      length: 0,
    });
    expect(hex(encodeOptionReply(8, 1))).toBe(
      '0003e889045565a9' + '00000008' + '00000001' + '00000000',
    );
    expect(decodeClientFlags(bytes('00000003'))).toBe(3);
  });

  it('export name reply with and without zero padding', () => {
    expect(encodeExportNameReply(1, 3, true)).toHaveLength(10);
    const full = encodeExportNameReply(0x100000, 0x4ed, false);
    expect(full).toHaveLength(134);
    expect(hex(full.subarray(0, 10))).toBe('0000000000100000' + '04ed');
  });

  it('info, server and meta context payloads', () => {
    expect(hex(encodeInfoExport(512, 1))).toBe('0000' + '0000000000000200' + '0001');
    expect(hex(encodeInfoBlockSize({ minimum: 1, preferred: 4096, maximum: 1 << 25 }))).toBe(
      '0003' + '00000001' + '00001000' + '02000000',
    );
    expect(decodeInfoReply(encodeInfoExport(512, 1))).toEqual({
      type: 'export',
      size: 512,
      flags: 1,
    });
    expect(decodeRepServer(encodeRepServer('disk', 'a disk'))).toEqual({
      name: 'disk',
      description: 'a disk',
    });
    expect(decodeRepMetaContext(encodeRepMetaContext(1, 'base:allocation'))).toEqual({
      id: 1,
      name: 'base:allocation',
    });
    expect(hex(encodeInfoRequest('x', [3]))).toBe('00000001' + '78' + '0001' + '0003');
    expect(() => decodeInfoReply(bytes('0000 00'))).toThrow(/NBD_INFO_EXPORT|truncated/);
  });

  it('request: magic flags type cookie offset length', () => {
    const r = encodeRequest(1, 1, 0x1122334455667788n, 0x123456789a, 4096);
    expect(hex(r)).toBe(
      '25609513' + '0001' + '0001' + '1122334455667788' + '000000123456789a' + '00001000',
    );
    expect(decodeRequest(r)).toEqual({
      magic: 0x25609513,
      flags: 1,
      type: 1,
      cookie: 0x1122334455667788n,
      offset: 0x123456789a,
      length: 4096,
    });
    expect(() => decodeRequest(new Uint8Array(10))).toThrow('truncated request');
  });

  it('replies and chunks', () => {
    expect(hex(encodeSimpleReply(22, 5n))).toBe('67446698' + '00000016' + '0000000000000005');
    expect(decodeReplyHeader(encodeSimpleReply(0, 9n))).toEqual({
      kind: 'simple',
      error: 0,
      cookie: 9n,
    });
    expect(hex(encodeHoleChunk(1, 2n, 4096, 512))).toBe(
      '668e33ef' +
        '0001' +
        '0002' +
        '0000000000000002' +
        '0000000c' +
        '0000000000001000' +
        '00000200',
    );
    expect(hex(encodeErrorChunk(1, 1n, 5, 'io'))).toBe(
      '668e33ef' + '0001' + '8001' + '0000000000000001' + '00000008' + '00000005' + '0002' + '696f',
    );
    expect(hex(encodeBlockStatusChunk(1, 3n, 0, [{ length: 4096, flags: 3 }]))).toBe(
      '668e33ef' +
        '0001' +
        '0005' +
        '0000000000000003' +
        '0000000c' +
        '00000000' +
        '00001000' +
        '00000003',
    );
    expect(() => decodeReplyHeader(new Uint8Array(20))).toThrow('invalid reply magic');
  });
});
