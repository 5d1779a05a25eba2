import { describe, expect, it } from 'vitest';
import { formatNbdUri, isNbdUri, parseNbdUri } from '../../src/nbd/uri.js';

describe('parseNbdUri (doc/uri.md)', () => {
  it.each([
    [
      'nbd://example.com/disk',
      { transport: 'tcp', host: 'example.com', port: 10809, exportName: 'disk', tls: false },
    ],
    ['nbd://example.com/', { exportName: '' }],
    ['nbd://example.com', { exportName: '' }],
    ['nbd://example.com//disk', { exportName: '/disk' }],
    ['nbd://example.com/hello%20world', { exportName: 'hello world' }],
    ['nbd://[::1]:1234/x', { host: '::1', port: 1234 }],
    ['nbds://h/e', { tls: true }],
    ['nbd+unix:///disk?socket=sock', { transport: 'unix', socket: 'sock', exportName: 'disk' }],
    ['nbd+unix:///?socket=%00/abstract', { socket: '\0/abstract', exportName: '' }],
    [
      'nbds+unix://alice@/?socket=/s&tls-psk-file=/k.psk',
      { tls: true, username: 'alice', tlsPskFile: '/k.psk' },
    ],
    [
      'nbds://h/?tls-certificates=/pki&tls-verify-peer=0&tls-hostname=srv',
      { tlsCertificates: '/pki', tlsVerifyPeer: false, tlsHostname: 'srv' },
    ],
    ['nbd://h/?x-experimental=1', { host: 'h' }],
  ])('%s', (uri, want) => {
    expect(parseNbdUri(uri)).toMatchObject(want);
  });

  it.each([
    ['nbd+unix:///disk', "missing 'socket'"],
    ['nbd://h/?socket=x', "'socket' is only valid"],
    ['nbd://h/?bogus=1', "unknown query parameter 'bogus'"],
    ['nbd://h:99999/', 'invalid port'],
    ['nbd+unix://host/?socket=s', 'takes no host'],
    ['http://h/', 'unknown scheme'],
    ['nbd:///', 'missing host'],
    ['nbd://h/%zz', 'percent-encoding'],
  ])('rejects %s', (uri, msg) => {
    expect(() => parseNbdUri(uri)).toThrow(msg);
  });

  it('recognises NBD URIs and formats them back', () => {
    expect(isNbdUri('nbd+unix:///?socket=/s')).toBe(true);
    expect(isNbdUri('/tmp/disk.qcow2')).toBe(false);
    expect(formatNbdUri(parseNbdUri('nbd+unix:///exp?socket=/tmp/s'))).toBe(
      'nbd+unix:///exp?socket=/tmp/s',
    );
    expect(formatNbdUri(parseNbdUri('nbd://127.0.0.1:10809/'))).toBe('nbd://127.0.0.1/');
  });
});
