// Reading specs: YAML and JSON, --set overrides, relative paths, hostile input.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applySetOverrides, loadSpec, parseSpecText } from '../../src/qemu/index.js';
import { tempDir } from '../support/tmp.js';

describe('parseSpecText', () => {
  it('reads YAML and JSON', () => {
    expect(parseSpecText('arch: aarch64\nsmp: 2\n')).toEqual({ arch: 'aarch64', smp: 2 });
    expect(parseSpecText('{"arch": "x86_64"}')).toEqual({ arch: 'x86_64' });
  });

  it('reports YAML errors with their position', () => {
    expect(() => parseSpecText('arch: [aarch64\n', 'vm.yaml')).toThrow(
      /^vm.yaml: invalid YAML: .*line 2/,
    );
  });

  it('rejects duplicate keys instead of letting the last one win', () => {
    expect(() => parseSpecText('memory: 1G\nmemory: 2G\n')).toThrow(
      /invalid YAML: Map keys must be unique/,
    );
  });

  it('bounds alias expansion (billion laughs)', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const cur = String.fromCharCode(97 + i);
      bomb.push(`${cur}: &${cur} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    expect(() => parseSpecText(bomb.join('\n'))).toThrow(/invalid YAML: .*(alias|Excessive)/i);
  });

  it('reports JSON errors', () => {
    expect(() => parseSpecText('{"arch": }', 'vm.json', 'json')).toThrow(/^vm.json: invalid JSON/);
  });
});

describe('applySetOverrides', () => {
  it('sets nested fields, list items, and typed values', () => {
    const spec = { memory: { size: '1G' }, disks: [{ path: 'a' }] };
    applySetOverrides(spec, [
      'memory.size=2G',
      'disks[0].snapshot=true',
      'smp.cpus=4',
      'disks[1].path=b',
      'cpu.features.sve=false',
      'memory.numa=[]',
    ]);
    expect(spec).toEqual({
      memory: { size: '2G', numa: [] },
      disks: [{ path: 'a', snapshot: true }, { path: 'b' }],
      smp: { cpus: 4 },
      cpu: { features: { sve: false } },
    });
  });

  it('an empty value removes the field', () => {
    expect(applySetOverrides({ firmware: 'none', arch: 'x86_64' }, ['firmware='])).toEqual({
      arch: 'x86_64',
    });
  });

  it('refuses bad paths, gaps in lists, scalars in the way and prototype keys', () => {
    expect(() => applySetOverrides({}, ['memory'])).toThrow(/expected path=value/);
    expect(() => applySetOverrides({}, ['a..b=1'])).toThrow(/bad path/);
    expect(() => applySetOverrides({ disks: [] }, ['disks[3].path=x'])).toThrow(
      /index 3 is past the end of a list of 0/,
    );
    expect(() => applySetOverrides({ machine: 'virt' }, ['machine.gicVersion=2'])).toThrow(
      /machine is not a mapping \(it is "virt"\)/,
    );
    expect(() => applySetOverrides({}, ['__proto__.polluted=1'])).toThrow(
      /'__proto__' is not a spec field/,
    );
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('loadSpec', () => {
  it('resolves relative paths against the spec file and applies --set before validating', async () => {
    const dir = await tempDir();
    const file = join(dir, 'vm.yaml');
    await writeFile(
      file,
      'arch: x86_64\ndisks:\n  - path: disk.qcow2\n  - uri: nbd+unix:///e?socket=nbd.sock\nserial: logs/serial.log\n',
    );
    const m = await loadSpec(file, { set: ['memory=2G'] });
    expect(m.memory.size).toBe(2 * 1024 ** 3);
    expect(m.disks[0]!.source).toEqual({ kind: 'file', path: join(dir, 'disk.qcow2') });
    expect(m.disks[1]!.source).toMatchObject({
      server: { type: 'unix', path: join(dir, 'nbd.sock') },
    });
    expect(m.serial.log).toBe(join(dir, 'logs/serial.log'));
  });

  it('a --set that breaks the spec fails validation with the field named', async () => {
    const dir = await tempDir();
    const file = join(dir, 'vm.json');
    await writeFile(file, '{"arch": "x86_64"}');
    await expect(loadSpec(file, { set: ['smp.cpus=0'] })).rejects.toThrow(
      /spec field `smp.cpus`: expected an integer between 1/,
    );
  });

  it('a missing file is an environment error naming it', async () => {
    await expect(loadSpec('/nonexistent/vm.yaml')).rejects.toThrow(
      "Could not read spec '/nonexistent/vm.yaml': No such file or directory",
    );
  });
});
