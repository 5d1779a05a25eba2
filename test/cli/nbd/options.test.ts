// vmforge-nbd option parsing: qemu-nbd's defaults, checks and messages.
import { describe, expect, it } from 'vitest';
import { parseNbdArgs } from '../../../src/cli/nbd/options.js';

function config(args: string[]) {
  const o = parseNbdArgs(args);
  if (o.kind !== 'run') throw new Error(o.kind);
  return o.config;
}

describe('parseNbdArgs', () => {
  it('defaults as qemu-nbd (except the TCP bind address)', () => {
    const c = config(['disk.img']);
    expect(c).toMatchObject({
      mode: 'serve',
      shared: 1,
      persistent: false,
      cache: 'writeback',
      discard: 'ignore',
      detectZeroes: 'off',
      handshakeLimit: 10,
      bind: undefined,
      port: undefined,
    });
    expect(c.exports).toEqual([
      {
        file: 'disk.img',
        name: '',
        description: undefined,
        format: undefined,
        readOnly: false,
        snapshot: false,
        allocationDepth: false,
        bitmaps: [],
        offset: 0,
      },
    ]);
  });

  it('-B is repeatable; qemu-nbd prepends each one, so the context ids run in reverse', () => {
    expect(config(['-B', 'a', '--bitmap=b', '-B', 'a', 'd']).exports[0]!.bitmaps).toEqual([
      'a',
      'b',
      'a',
    ]);
    expect(config(['-B', 'first', '-B', 'second', 'd']).exports[0]!.bitmaps).toEqual([
      'second',
      'first',
    ]);
  });

  it('reads the short and long flags', () => {
    const c = config([
      '-f',
      'raw',
      '-r',
      '-x',
      'exp',
      '-D',
      'desc',
      '-k',
      '/tmp/s',
      '-e',
      '0',
      '-t',
      '-A',
      '-o',
      '0x200',
      'd',
    ]);
    expect(c.exports[0]).toMatchObject({
      format: 'raw',
      readOnly: true,
      name: 'exp',
      description: 'desc',
      allocationDepth: true,
      offset: 512,
    });
    expect(c).toMatchObject({ socket: '/tmp/s', shared: 0, persistent: true });
    expect(
      config(['--cache=unsafe', '--discard=unmap', '--detect-zeroes=unmap', 'd']),
    ).toMatchObject({
      cache: 'unsafe',
      discard: 'unmap',
      detectZeroes: 'unmap',
    });
    expect(config(['-n', 'd']).cache).toBe('none');
  });

  it('several exports', () => {
    const c = config([
      '--export',
      'name=a,file=/a.img,readonly=on',
      '--export',
      'name=b,,c,file=/b.img,format=raw',
    ]);
    expect(c.exports.map((e) => [e.name, e.file, e.readOnly, e.format, e.bitmaps])).toEqual([
      ['a', '/a.img', true, undefined, []],
      ['b,c', '/b.img', false, 'raw', []],
    ]);
    // bitmap= repeats and keeps its order (the ids follow it).
    const [one] = config([
      '--export',
      'name=a,file=/a.qcow2,bitmap=x,bitmap=y,,z,bitmap=x',
    ]).exports;
    expect(one!.bitmaps).toEqual(['x', 'y,z', 'x']);
  });

  it.each([
    [['-k', 'rel', 'd'], 'socket path must be absolute'],
    [['-e', 'x', 'd'], "Invalid shared device number 'x'"],
    [['--cache=bad', 'd'], 'Invalid cache mode `bad'],
    [['-n', '--cache=none', 'd'], '-n and --cache can only be specified once'],
    [['--discard=x', 'd'], 'Invalid discard mode `x'],
    [['--detect-zeroes=unmap', 'd'], 'not allowed without setting discard operation to unmap'],
    [['a', 'b'], 'Invalid number of arguments'],
    [[], 'Invalid number of arguments'],
    [['-L', 'd'], 'List mode is incompatible with a file name'],
    [['-L', '-f', 'raw'], 'List mode is incompatible with per-device settings'],
    [['-L', '--fork'], 'List mode is incompatible with forking'],
    [['-L', '-B', 'bm'], 'List mode is incompatible with per-device settings'],
    [['-B', 'bm', '--export', 'file=/x'], 'apply to FILE'],
    [['-c', '/dev/nbd0', 'd'], 'is not supported by vmforge-nbd'],
    [['--aio=native', 'd'], 'is not supported by vmforge-nbd'],
    [['--tls-authz=a', 'd'], '--tls-authz is not permitted without --tls-creds'],
    [['--tls-hostname=h', 'd'], '--tls-hostname is not permitted without --tls-creds'],
    [['--selinux-label=x', 'd'], 'SELinux support not enabled'],
    [['-p', '70000', 'd'], 'port 70000 out of range'],
    [['--export', 'name=a', 'd'], "Parameter 'file' is missing"],
    [['-x', 'a', '--export', 'file=/x'], 'apply to FILE'],
  ])('%j -> %s', (args, msg) => {
    expect(() => parseNbdArgs(args)).toThrow(msg);
  });

  it('help and version', () => {
    expect(parseNbdArgs(['-h']).kind).toBe('help');
    expect(parseNbdArgs(['--version']).kind).toBe('version');
  });
});
