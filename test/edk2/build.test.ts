import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildFirmware, featuresFor } from '../../src/edk2/build/index.js';
import { findBuildOutputs } from '../../src/edk2/build/outputs.js';
import {
  BUILD_SCRIPT,
  parseDefines,
  planBuild,
  planClone,
  PLATFORMS,
} from '../../src/edk2/build/plan.js';
import {
  buildPrerequisites,
  checkPrerequisites,
  describeMissing,
} from '../../src/edk2/build/prerequisites.js';
import { inspectTree, toolchainTagsOf, type TreeInfo } from '../../src/edk2/build/tree.js';
import { listFirmware } from '../../src/edk2/list.js';
import { tempDir } from '../support/tmp.js';
import { armCode, varsImage } from './fv-fixtures.js';

const TOOLS_DEF_2022 =
  '*_GCC5_AARCH64_CC_PATH           = ENV(GCC5_AARCH64_PREFIX)gcc\nRELEASE_GCC5_AARCH64_DLINK_FLAGS = -flto -llto-aarch64\n';
const TOOLS_DEF_2024 =
  '*_GCC_AARCH64_CC_PATH = ENV(GCC_AARCH64_PREFIX)gcc\n*_GCC5_AARCH64_CC_PATH = ENV(GCC5_AARCH64_PREFIX)gcc\n';
const TOOLS_DEF_2026 =
  '*_GCC_AARCH64_CC_PATH = ENV(GCC_AARCH64_PREFIX)gcc\n*_GCC_X64_CC_PATH = DEF(GCC_X64_PREFIX)gcc\n';

async function exe(path: string, body: string) {
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
}

/** A fake edk2 tree: edksetup.sh defines a `build` function that "produces" firmware. */
async function fakeTree(opts: { debian?: boolean; toolsDef?: string; failBuild?: boolean } = {}) {
  const root = await tempDir('vmforge-edk2-');
  await mkdir(join(root, 'BaseTools/Conf'), { recursive: true });
  await mkdir(join(root, 'BaseTools/Source/C/bin'), { recursive: true });
  await writeFile(join(root, 'BaseTools/Conf/tools_def.template'), opts.toolsDef ?? TOOLS_DEF_2022);
  await writeFile(join(root, 'BaseTools/GNUmakefile'), 'all:\n\ttouch Source/C/bin/GenFw\n');
  await mkdir(join(root, 'fixtures'));
  await writeFile(join(root, 'fixtures/QEMU_EFI.fd'), armCode());
  await writeFile(join(root, 'fixtures/QEMU_VARS.fd'), varsImage(0xc0000));
  const fv = 'Build/ArmVirtQemu-AARCH64/"$T"_"$TAG"/FV';
  await writeFile(
    join(root, 'edksetup.sh'),
    [
      'export WORKSPACE=$PWD',
      'build() {',
      '  echo "ARGS: $*"; echo "ENV: $GCC5_AARCH64_PREFIX $GCC_AARCH64_PREFIX $PYTHON_COMMAND WS=$WORKSPACE"',
      '  while [ $# -gt 0 ]; do case $1 in -b) T=$2; shift;; -t) TAG=$2; shift;; esac; shift; done',
      '  echo "Building ... $PWD/MdePkg/Library/BaseLib/BaseLib.inf [AARCH64]"',
      opts.failBuild
        ? '  echo "build.py...: error 7000: Failed to execute command" >&2; return 1'
        : '',
      `  mkdir -p ${fv} && cp fixtures/QEMU_EFI.fd fixtures/QEMU_VARS.fd ${fv}/`,
      '}',
    ].join('\n'),
  );
  if (opts.debian) {
    await mkdir(join(root, 'ShellPkg/Application/Shell'), { recursive: true });
    await writeFile(
      join(root, 'ShellPkg/Application/Shell/Shell.inf'),
      '[LibraryClasses]\n  BaseLib\n  SecureBootVariableLib\n',
    );
    await mkdir(join(root, 'ArmPkg/Library/GccLto'), { recursive: true });
    await writeFile(join(root, 'ArmPkg/Library/GccLto/liblto-aarch64.s'), '');
  }
  return root;
}

/** PATH with stand-ins for every prerequisite (the cross gcc "assembles" by copying). */
async function fakePath() {
  const bin = await tempDir('vmforge-bin-');
  for (const t of ['make', 'gcc', 'g++', 'python3', 'iasl', 'nasm', 'git'])
    await exe(join(bin, t), t === 'make' ? 'exec /usr/bin/make "$@"' : 'true');
  await exe(
    join(bin, 'aarch64-linux-gnu-gcc'),
    'while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done; echo stub > "$out"',
  );
  await exe(join(bin, 'bash'), 'exec /bin/bash "$@"');
  return bin;
}

describe('prerequisites', () => {
  it('names the Debian package of each missing tool, cross compiler included', async () => {
    const bin = await tempDir();
    await exe(join(bin, 'make'), 'true');
    await exe(join(bin, 'gcc'), 'true');
    const list = buildPrerequisites('aarch64', { host: 'x86_64' });
    const status = await checkPrerequisites(list, { PATH: bin });
    const msg = describeMissing(status)!;
    expect(msg).toContain('g++ (builds VfrCompile (BaseTools); Debian package g++)');
    expect(msg).toContain(
      'aarch64-linux-gnu-gcc (cross-compiles aarch64 firmware; Debian package gcc-aarch64-linux-gnu)',
    );
    expect(msg).toMatch(/apt-get install .*\bpython3\b.*\bacpica-tools\b/);
    expect(msg).not.toMatch(/\bmake\b \(/);
    expect(msg).not.toContain('nasm'); // aarch64 needs no NASM
    expect(buildPrerequisites('x86_64', { host: 'x86_64' }).map((p) => p.what)).toContain('nasm');
    expect(
      buildPrerequisites('x86_64', { host: 'x86_64' }).some((p) =>
        p.what.endsWith('linux-gnu-gcc'),
      ),
    ).toBe(false);
  });

  it('buildFirmware stops before running anything when something is missing', async () => {
    const root = await fakeTree();
    const err = await buildFirmware({
      arch: 'aarch64',
      source: root,
      env: { PATH: '/nonexistent' },
      cacheDir: false,
    }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'VMF_FW_PREREQ' });
    expect((err as Error).message).toMatch(/^Missing build prerequisites: /);
  });
});

describe('toolchain tag', () => {
  it('prefers GCC where the tree has it, GCC5 on older trees', () => {
    expect(toolchainTagsOf(TOOLS_DEF_2022)).toEqual(['GCC5']);
    expect(toolchainTagsOf(TOOLS_DEF_2024)).toEqual(['GCC', 'GCC5']);
    expect(toolchainTagsOf(TOOLS_DEF_2026)).toEqual(['GCC']);
    expect(toolchainTagsOf('*_GCC49_AARCH64_CC_PATH = x')).toEqual([]);
  });

  it('refuses a tag the tree lacks', () => {
    const tree: TreeInfo = {
      root: '/t',
      toolchainTags: ['GCC'],
      shellNeedsSecureBootLib: false,
      ltoStubs: [],
      baseToolsBuilt: true,
    };
    expect(() =>
      planBuild({ tree, arch: 'aarch64', crossPrefix: 'x-', toolchain: 'GCC5' }),
    ).toThrow(/no toolchain tag GCC5 \(it has: GCC\)/);
    expect(() =>
      planBuild({ tree: { ...tree, toolchainTags: [] }, arch: 'aarch64', crossPrefix: '' }),
    ).toThrow(/No GCC or GCC5 toolchain/);
  });
});

describe('command construction', () => {
  const tree: TreeInfo = {
    root: '/src/edk2',
    toolchainTags: ['GCC', 'GCC5'],
    shellNeedsSecureBootLib: false,
    ltoStubs: [],
    baseToolsBuilt: false,
  };

  it('aarch64 cross build: BaseTools, then edksetup + build with both prefix spellings', () => {
    const p = planBuild({
      tree,
      arch: 'aarch64',
      crossPrefix: 'aarch64-linux-gnu-',
      jobs: 4,
      target: 'DEBUG',
      defines: parseDefines(['TPM2_ENABLE=TRUE', 'NETWORK_TLS_ENABLE']),
    });
    expect(p.steps.map((s) => [s.name, s.file, ...s.args])).toEqual([
      ['basetools', 'make', '-C', 'BaseTools', '-j4'],
      [
        'build',
        'bash',
        '-c',
        BUILD_SCRIPT,
        'bash',
        '-a',
        'AARCH64',
        '-t',
        'GCC',
        '-p',
        'ArmVirtPkg/ArmVirtQemu.dsc',
        '-b',
        'DEBUG',
        '-n',
        '4',
        '-D',
        'TPM2_ENABLE=TRUE',
        '-D',
        'NETWORK_TLS_ENABLE=TRUE',
      ],
    ]);
    expect(p.env).toEqual({
      PYTHON_COMMAND: 'python3',
      GCC_AARCH64_PREFIX: 'aarch64-linux-gnu-',
      GCC5_AARCH64_PREFIX: 'aarch64-linux-gnu-',
    });
    expect(p.unset).toContain('WORKSPACE');
  });

  it('x86_64: OvmfPkgX64, GCC_BIN only when cross-compiling', () => {
    const native = planBuild({
      tree: { ...tree, baseToolsBuilt: true },
      arch: 'x86_64',
      crossPrefix: '',
    });
    expect(native.steps.map((s) => s.name)).toEqual(['build']);
    expect(native.buildArgs.slice(0, 8)).toEqual([
      '-a',
      'X64',
      '-t',
      'GCC',
      '-p',
      'OvmfPkg/OvmfPkgX64.dsc',
      '-b',
      'RELEASE',
    ]);
    expect(native.env).toEqual({ PYTHON_COMMAND: 'python3' });
    const cross = planBuild({ tree, arch: 'x86_64', crossPrefix: 'x86_64-linux-gnu-' });
    expect(cross.env['GCC_BIN']).toBe('x86_64-linux-gnu-');
    expect(cross.env['GCC5_BIN']).toBe('x86_64-linux-gnu-');
  });

  it("Debian's tree: SECURE_BOOT_ENABLE=TRUE is added for the shell, FALSE is refused, the LTO stub is assembled", () => {
    const deb: TreeInfo = {
      ...tree,
      shellNeedsSecureBootLib: true,
      ltoStubs: [
        {
          arch: 'aarch64',
          source: '/src/edk2/ArmPkg/Library/GccLto/liblto-aarch64.s',
          output: '/src/edk2/ArmPkg/Library/GccLto/liblto-aarch64.a',
        },
      ],
    };
    const p = planBuild({ tree: deb, arch: 'aarch64', crossPrefix: 'aarch64-linux-gnu-' });
    expect(p.defines).toContainEqual(['SECURE_BOOT_ENABLE', 'TRUE']);
    expect(p.notes.join('\n')).toMatch(/SecureBootVariableLib.*added -D SECURE_BOOT_ENABLE=TRUE/);
    expect(p.steps[0]).toMatchObject({
      name: 'lto-stub',
      file: 'aarch64-linux-gnu-gcc',
      args: ['-c', '-fpic', deb.ltoStubs[0]!.source, '-o', deb.ltoStubs[0]!.output],
    });
    expect(() =>
      planBuild({
        tree: deb,
        arch: 'aarch64',
        crossPrefix: '',
        defines: [['SECURE_BOOT_ENABLE', 'FALSE']],
      }),
    ).toThrow(/drop -D SECURE_BOOT_ENABLE=FALSE/);
  });

  it('validates defines and jobs; git refs cannot smuggle options', () => {
    expect(parseDefines(['A=1', 'A=2', 'B'])).toEqual([
      ['A', '2'],
      ['B', 'TRUE'],
    ]);
    expect(() => parseDefines(['1BAD=x'])).toThrow(/Invalid define '1BAD=x'/);
    expect(() => parseDefines(['A=two words'])).toThrow(/one word/);
    expect(() => planBuild({ tree, arch: 'aarch64', crossPrefix: '', jobs: 0 })).toThrow(
      /Invalid job count/,
    );
    expect(() => planBuild({ tree, arch: 'riscv64', crossPrefix: '' })).toThrow(
      /supported are aarch64, x86_64/,
    );
    expect(planClone('https://example.org/edk2.git', 'edk2-stable202411', '/d')[0]!.args).toEqual([
      'clone',
      '--depth',
      '1',
      '--branch',
      'edk2-stable202411',
      '--',
      'https://example.org/edk2.git',
      '/d',
    ]);
    expect(() => planClone('--upload-pack=x', 'r', '/d')).toThrow(/must not start with "-"/);
  });

  it('descriptor features follow the defines', () => {
    expect(featuresFor('aarch64', 'DEBUG', [['SECURE_BOOT_ENABLE', 'TRUE']])).toEqual([
      'secure-boot',
      'verbose-static',
    ]);
    expect(featuresFor('aarch64', 'DEBUG', [['DEBUG_PRINT_ERROR_LEVEL', '0x80000000']])).toEqual(
      [],
    );
    expect(
      featuresFor('x86_64', 'RELEASE', [
        ['SMM_REQUIRE', 'TRUE'],
        ['SECURE_BOOT_ENABLE', 'TRUE'],
      ]),
    ).toEqual(['acpi-s3', 'requires-smm', 'secure-boot']);
  });
});

describe('tree inspection and output discovery', () => {
  it('finds the Debian quirks in a tree', async () => {
    const root = await fakeTree({ debian: true });
    const info = await inspectTree(root);
    expect(info).toMatchObject({
      toolchainTags: ['GCC5'],
      shellNeedsSecureBootLib: true,
      baseToolsBuilt: false,
    });
    expect(info.ltoStubs.map((s) => s.output)).toEqual([
      join(root, 'ArmPkg/Library/GccLto/liblto-aarch64.a'),
    ]);
    await expect(inspectTree(await tempDir())).rejects.toThrow(/is not an edk2 source tree/);
  });

  it('globs Build/* for the FV directory of the right target and tag', async () => {
    const root = await tempDir();
    for (const dir of [
      'Build/ArmVirtQemu-AArch64/DEBUG_GCC/FV',
      'Build/ArmVirtQemu-AArch64/RELEASE_GCC/FV',
      'Build/Other/RELEASE_GCC5/FV',
    ]) {
      await mkdir(join(root, dir), { recursive: true });
      await writeFile(join(root, dir, 'QEMU_EFI.fd'), 'x');
    }
    await writeFile(join(root, 'Build/ArmVirtQemu-AArch64/RELEASE_GCC/FV/QEMU_VARS.fd'), 'x');
    expect(await findBuildOutputs(root, PLATFORMS['aarch64']!, 'RELEASE', 'GCC')).toEqual({
      fvDir: join(root, 'Build/ArmVirtQemu-AArch64/RELEASE_GCC/FV'),
      code: join(root, 'Build/ArmVirtQemu-AArch64/RELEASE_GCC/FV/QEMU_EFI.fd'),
      vars: join(root, 'Build/ArmVirtQemu-AArch64/RELEASE_GCC/FV/QEMU_VARS.fd'),
    });
    expect((await findBuildOutputs(root, PLATFORMS['aarch64']!, 'RELEASE', 'GCC5')).fvDir).toBe(
      join(root, 'Build/Other/RELEASE_GCC5/FV'),
    );
    await expect(findBuildOutputs(root, PLATFORMS['aarch64']!, 'NOOPT', 'GCC')).rejects.toThrow(
      /Build\/\*\/NOOPT_GCC\/FV\/QEMU_EFI.fd/,
    );
  });
});

describe('buildFirmware runs the plan (fake tree, fake compilers)', () => {
  it('builds, logs, discovers the outputs and registers them', async () => {
    const root = await fakeTree({ debian: true });
    const bin = await fakePath();
    const cache = await tempDir();
    const events: string[] = [];
    const r = await buildFirmware({
      arch: 'aarch64',
      source: root,
      jobs: 2,
      cacheDir: cache,
      env: { PATH: `${bin}:/usr/bin:/bin`, WORKSPACE: '/stale', HOME: cache },
      skipPrerequisites: true,
      onProgress: (e) => events.push(`${e.phase}${e.modules ? `#${e.modules}` : ''}`),
    });
    expect(events).toEqual([
      'prerequisites',
      'lto-stub',
      'basetools',
      'build',
      'build#1',
      'outputs',
      'register',
    ]);
    const log = await readFile(r.logPath, 'utf8');
    expect(log).toContain(
      'ARGS: -a AARCH64 -t GCC5 -p ArmVirtPkg/ArmVirtQemu.dsc -b RELEASE -n 2 -D SECURE_BOOT_ENABLE=TRUE',
    );
    expect(log).toContain(`ENV: aarch64-linux-gnu- aarch64-linux-gnu- python3 WS=${root}`); // stale WORKSPACE cleared
    expect(await readFile(join(root, 'ArmPkg/Library/GccLto/liblto-aarch64.a'), 'utf8')).toBe(
      'stub\n',
    );
    expect(r.manifest!.code.path).toMatch(
      /store\/build-aarch64-release-[0-9a-f]{12}\/QEMU_EFI.fd$/,
    );
    const list = await listFirmware({ dirs: [join(cache, 'descriptors')] });
    expect(list.entries).toHaveLength(1);
    expect(list.entries[0]!.descriptor).toMatchObject({
      features: ['secure-boot'],
      targets: [{ architecture: 'aarch64', machines: ['virt-*'] }],
      tags: [
        '-a AARCH64',
        '-p ArmVirtPkg/ArmVirtQemu.dsc',
        '-t GCC5',
        '-b RELEASE',
        '-D SECURE_BOOT_ENABLE=TRUE',
      ],
    });
  });

  it('a failing build names the step, keeps the log and shows its tail', async () => {
    const root = await fakeTree({ failBuild: true });
    await writeFile(join(root, 'BaseTools/Source/C/bin/GenFw'), '');
    const bin = await fakePath();
    const err = await buildFirmware({
      arch: 'aarch64',
      source: root,
      cacheDir: false,
      env: { PATH: `${bin}:/usr/bin:/bin` },
      skipPrerequisites: true,
    }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'VMF_FW_BUILD_FAILED' });
    expect((err as Error).message).toMatch(
      /^build ArmVirtPkg\/ArmVirtQemu.dsc \(AARCH64, RELEASE_GCC5\) failed: bash exited with status 1\. Log: .*vmforge-build-aarch64.log\n/,
    );
    expect((err as Error).message).toContain('error 7000: Failed to execute command');
  });

  it('can be cancelled', async () => {
    const root = await fakeTree();
    await writeFile(join(root, 'edksetup.sh'), 'build() { sleep 30; }');
    await writeFile(join(root, 'BaseTools/Source/C/bin/GenFw'), '');
    const bin = await fakePath();
    const ac = new AbortController();
    const p = buildFirmware({
      arch: 'aarch64',
      source: root,
      cacheDir: false,
      env: { PATH: `${bin}:/usr/bin:/bin` },
      skipPrerequisites: true,
      signal: ac.signal,
      onProgress: (e) => {
        if (e.phase === 'build') setTimeout(() => ac.abort(), 200);
      },
    });
    await expect(p).rejects.toMatchObject({ code: 'VMF_ABORTED' });
  });

  it('dry run returns the plan without running anything', async () => {
    const root = await fakeTree({ debian: true });
    const r = await buildFirmware({
      arch: 'aarch64',
      source: root,
      dryRun: true,
      skipPrerequisites: true,
      cacheDir: false,
      jobs: 3,
    });
    expect(r.plan.steps.map((s) => s.name)).toEqual(['lto-stub', 'basetools', 'build']);
    expect(r.outputs).toBeUndefined();
  });
});
