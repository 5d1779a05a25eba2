import { describe, expect, it } from 'vitest';
import { findFirmware } from '../../src/edk2/find.js';
import { listFirmware } from '../../src/edk2/list.js';
import { resolveMachine, parseMachineHelp } from '../../src/edk2/machine.js';
import { globMatch } from '../../src/edk2/glob.js';
import { decodeDescriptor, encodeDescriptor } from '../../src/edk2/descriptor.js';
import { tempDir } from '../support/tmp.js';
import { fakeLister, tree, uefi } from './descriptor-tree.js';

const base = { checkFiles: false, machineLister: fakeLister } as const;

describe('listFirmware precedence (firmware.json "Firmware")', () => {
  it('sorts by file name across directories; a more specific same-named file overrides', async () => {
    const root = await tempDir();
    const dirs = await tree(root, {
      usr: {
        '50-a.json': uefi('x86_64', ['pc-q35-*'], []),
        '60-b.json': uefi('aarch64', ['virt-*'], []),
      },
      etc: {
        '10-c.json': uefi('x86_64', ['pc-q35-*'], ['secure-boot']),
        '60-b.json': uefi('aarch64', ['virt-*'], ['secure-boot']),
      },
      user: {},
    });
    const l = await listFirmware({ dirs });
    expect(l.entries.map((e) => e.name)).toEqual(['10-c.json', '50-a.json', '60-b.json']);
    const b = l.entries[2]!;
    expect(b.path).toBe(`${root}/etc/60-b.json`);
    expect(b.overrides).toEqual([`${root}/usr/60-b.json`]);
    expect(b.descriptor?.features).toEqual(['secure-boot']);
  });

  it('an empty file or a symlink to /dev/null masks; only *.json counts', async () => {
    const root = await tempDir();
    const dirs = await tree(root, {
      usr: {
        '50-ovmf.json': uefi('x86_64', ['pc-q35-*'], []),
        '60-aa.json': uefi('aarch64', ['virt-*'], []),
        README: 'x',
      },
      etc: { '50-ovmf.json': '' },
      user: { '60-aa.json': { symlink: '/dev/null' } },
    });
    const l = await listFirmware({ dirs });
    expect(l.entries).toEqual([]);
    expect(l.masked.map((m) => [m.name, m.hides.length])).toEqual([
      ['50-ovmf.json', 1],
      ['60-aa.json', 1],
    ]);
  });

  it('reports an invalid descriptor instead of failing the list', async () => {
    const root = await tempDir();
    const dirs = await tree(root, {
      usr: {
        '10-bad.json': '{"description": 1}',
        '20-notjson.json': '{',
        '30-ok.json': uefi('aarch64', ['virt-*'], []),
      },
    });
    const l = await listFirmware({ dirs });
    expect(l.entries.map((e) => [e.name, e.error === undefined])).toEqual([
      ['10-bad.json', false],
      ['20-notjson.json', false],
      ['30-ok.json', true],
    ]);
    expect(l.entries[0]!.error).toMatch(/missing mandatory member 'interface-types'/);
    expect(l.entries[1]!.error).toMatch(/not JSON/);
  });

  it('missing directories are fine', async () => {
    const l = await listFirmware({ dirs: ['/nonexistent/a', '/nonexistent/b'] });
    expect(l.entries).toEqual([]);
  });
});

describe('descriptor schema', () => {
  it('treats an absent flash mode as split and checks mode vs template', () => {
    const d = decodeDescriptor(JSON.stringify(uefi('aarch64', ['virt-*'], [])), 'x');
    expect(d.mapping).toMatchObject({ device: 'flash', mode: 'split' });
    const noTpl = JSON.parse(JSON.stringify(uefi('aarch64', ['virt-*'], [])));
    delete noTpl.mapping['nvram-template'];
    expect(() => decodeDescriptor(JSON.stringify(noTpl), 'f.json')).toThrow(
      /'f.json'.*split.*nvram-template/,
    );
    expect(() =>
      decodeDescriptor(
        JSON.stringify({ ...noTpl, mapping: { ...noTpl.mapping, mode: 'bogus' } }),
        'f',
      ),
    ).toThrow(/unknown flash mode 'bogus'/);
  });

  it('encodes split without the mode member and round-trips', () => {
    const d = uefi('aarch64', ['virt-*'], ['verbose-static']);
    const text = encodeDescriptor(d);
    expect(text).not.toContain('"mode"');
    expect(decodeDescriptor(text, 'x')).toEqual(d);
  });
});

describe('machine globs and aliases', () => {
  it('matches like g_pattern_match_simple', () => {
    expect(globMatch('pc-q35-*', 'pc-q35-7.2')).toBe(true);
    expect(globMatch('pc-q35-*', 'pc-i440fx-7.2')).toBe(false);
    expect(globMatch('virt-?.?', 'virt-7.2')).toBe(true);
    expect(globMatch('virt-?.?', 'virt-2.12')).toBe(false);
    expect(globMatch('*', '')).toBe(true);
    expect(globMatch('a*b*c', 'aXbYbZc')).toBe(true);
    expect(globMatch('[ab]', 'a')).toBe(false); // no bracket classes
    expect(globMatch('*'.repeat(200) + 'x', 'y'.repeat(5000))).toBe(false); // no blow-up
  });

  it('parses qemu -machine help', () => {
    const m = parseMachineHelp(
      'Supported machines are:\nq35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\npc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\npc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)\n',
    );
    expect(m).toEqual([
      { name: 'q35', aliasOf: 'pc-q35-7.2', isDefault: false },
      { name: 'pc-q35-7.2', isDefault: false },
      { name: 'pc-i440fx-7.2', isDefault: true },
    ]);
  });

  it('resolves aliases through the emulator, falls back without one, rejects globs and unknowns', async () => {
    expect(await resolveMachine('x86_64', 'q35', fakeLister)).toEqual({
      requested: 'q35',
      concrete: 'pc-q35-7.2',
      via: 'qemu',
    });
    expect((await resolveMachine('aarch64', undefined, fakeLister)).concrete).toBe('virt-7.2');
    const none = async () => undefined;
    expect(await resolveMachine('x86_64', 'q35', none)).toMatchObject({
      concrete: 'pc-q35-999.0',
      via: 'fallback',
    });
    await expect(resolveMachine('x86_64', 'pc-q35-*', fakeLister)).rejects.toThrow(/is a pattern/);
    await expect(resolveMachine('aarch64', 'raspi3b', fakeLister)).rejects.toThrow(
      /qemu-system-aarch64 has no machine type 'raspi3b'/,
    );
  });
});

describe('findFirmware selection', () => {
  async function debianLike() {
    const root = await tempDir();
    return tree(root, {
      usr: {
        '40-x86-enrolled.json': uefi(
          'x86_64',
          ['pc-q35-*'],
          ['acpi-s3', 'enrolled-keys', 'requires-smm', 'secure-boot'],
          '/fw/sb.fd',
          '/fw/ms-vars.fd',
        ),
        '50-x86-secure.json': uefi(
          'x86_64',
          ['pc-q35-*'],
          ['acpi-s3', 'requires-smm', 'secure-boot'],
          '/fw/sb.fd',
          '/fw/vars.fd',
        ),
        '60-x86.json': uefi(
          'x86_64',
          ['pc-i440fx-*', 'pc-q35-*'],
          ['acpi-s3', 'some-future-feature'],
          '/fw/code.fd',
          '/fw/vars.fd',
        ),
        '60-aarch64.json': uefi('aarch64', ['virt-*'], ['verbose-static']),
        '70-aarch64-old.json': uefi('aarch64', ['virt-2.*'], []),
        '80-x86-combined.json': uefi('x86_64', ['pc-q35-*'], [], '/fw/ovmf.fd', null),
      },
    });
  }

  it('first match wins when nothing is asked (libvirt behaviour)', async () => {
    const m = await findFirmware({ ...base, dirs: await debianLike(), arch: 'x86_64' });
    expect(m.name).toBe('40-x86-enrolled.json');
    expect(m.machine.concrete).toBe('pc-q35-7.2');
  });

  it('secure-boot and enrolled-keys are tri-state', async () => {
    const dirs = await debianLike();
    const pick = async (o: object) =>
      (await findFirmware({ ...base, dirs, arch: 'x86_64', ...o })).name;
    expect(await pick({ secureBoot: false })).toBe('60-x86.json');
    expect(await pick({ enrolledKeys: false })).toBe('50-x86-secure.json');
    expect(await pick({ secureBoot: true, enrolledKeys: false })).toBe('50-x86-secure.json');
    expect(await pick({ enrolledKeys: true })).toBe('40-x86-enrolled.json');
    expect(await pick({ withoutFeatures: ['requires-smm'] })).toBe('60-x86.json');
    expect(await pick({ features: ['some-future-feature'] })).toBe('60-x86.json');
    await expect(pick({ enrolledKeys: true, secureBoot: false })).rejects.toThrow(
      /Enrolled keys need Secure Boot/,
    );
  });

  it('matches the resolved machine, not the alias', async () => {
    const dirs = await debianLike();
    const m = await findFirmware({ ...base, dirs, arch: 'x86_64', machine: 'pc' });
    expect(m.name).toBe('60-x86.json'); // pc → pc-i440fx-7.2, only 60 lists pc-i440fx-*
    const old = await findFirmware({
      ...base,
      dirs,
      arch: 'aarch64',
      machine: 'virt-2.12',
      withoutFeatures: ['verbose-static'],
    });
    expect(old.name).toBe('70-aarch64-old.json');
  });

  it('filters by flash mode (split by default)', async () => {
    const dirs = await debianLike();
    const m = await findFirmware({ ...base, dirs, arch: 'x86_64', mode: 'combined' });
    expect(m).toMatchObject({
      name: '80-x86-combined.json',
      mode: 'combined',
      code: { path: '/fw/ovmf.fd' },
    });
    expect(m.varsTemplate).toBeUndefined();
  });

  it('skips descriptors whose files are missing', async () => {
    const dirs = await debianLike();
    await expect(
      findFirmware({ dirs, machineLister: fakeLister, arch: 'aarch64' }),
    ).rejects.toThrow(/60-aarch64.json: \/fw\/aarch64-code.fd is missing/);
  });

  it('explains a miss: what was asked, which package, why each candidate failed', async () => {
    const dirs = await debianLike();
    const err = await findFirmware({ ...base, dirs, arch: 'aarch64', secureBoot: true }).catch(
      (e: Error) => e,
    );
    expect(err).toMatchObject({ code: 'VMF_FW_NOT_FOUND', kind: 'environment' });
    const msg = (err as Error).message;
    expect(msg).toMatch(
      /^No UEFI firmware for aarch64 machine virt \(virt-7.2\) with secure-boot\./,
    );
    expect(msg).toContain('Install the Debian package qemu-efi-aarch64');
    expect(msg).toContain('60-aarch64.json: lacks secure-boot');
    expect(msg).toContain('70-aarch64-old.json: machines virt-2.* do not include virt-7.2');
    expect(msg).not.toContain('x86');
  });
});
