// Command construction for an edk2 build, kept pure so it can be tested without compilers:
// the classic recipe (reference §1.4) — make -C BaseTools; . ./edksetup.sh; build -a … -t … -p …
// -b … -n … -D … — with the environment tools_def.template reads (cross prefixes under both the
// GCC and GCC5 spellings) and the Debian tree quirks found by inspectTree().

import { InvalidArgumentError } from '../../core/index.js';
import { chooseToolchainTag, type ToolchainTag, type TreeInfo } from './tree.js';

export type BuildTarget = 'DEBUG' | 'RELEASE' | 'NOOPT';

export interface Platform {
  /** QEMU target. */
  arch: string;
  /** edk2 `-a` value. */
  edk2Arch: string;
  /** `-p` platform description, relative to the tree. */
  dsc: string;
  /** FV/ file names of the code and vars images. */
  code: string;
  vars: string;
  /** Glob for the output directory under Build/ (OUTPUT_DIRECTORY changed case in 2025). */
  outputDirs: string[];
}

export const PLATFORMS: Record<string, Platform> = {
  aarch64: {
    arch: 'aarch64',
    edk2Arch: 'AARCH64',
    dsc: 'ArmVirtPkg/ArmVirtQemu.dsc',
    code: 'QEMU_EFI.fd',
    vars: 'QEMU_VARS.fd',
    outputDirs: ['ArmVirtQemu-AARCH64', 'ArmVirtQemu-AArch64'],
  },
  x86_64: {
    arch: 'x86_64',
    edk2Arch: 'X64',
    dsc: 'OvmfPkg/OvmfPkgX64.dsc',
    code: 'OVMF_CODE.fd',
    vars: 'OVMF_VARS.fd',
    outputDirs: ['OvmfX64'],
  },
};

export function platformFor(arch: string): Platform {
  const p = PLATFORMS[arch];
  if (!p)
    throw new InvalidArgumentError(
      `Cannot build firmware for '${arch}': supported are ${Object.keys(PLATFORMS).join(', ')}`,
    );
  return p;
}

export type Define = readonly [name: string, value: string];

/** Parse `NAME=VALUE` / `NAME` (edk2 treats a bare name as TRUE). Later ones win. */
export function parseDefines(items: readonly string[]): Define[] {
  const out = new Map<string, string>();
  for (const item of items) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? 'TRUE' : item.slice(eq + 1);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      throw new InvalidArgumentError(`Invalid define '${item}': expected NAME=VALUE`);
    if (/[\s\0]/.test(value) || value === '')
      throw new InvalidArgumentError(`Invalid define '${item}': the value must be one word`);
    out.delete(name);
    out.set(name, value);
  }
  return [...out];
}

export interface BuildStep {
  name: 'clone' | 'submodules' | 'lto-stub' | 'basetools' | 'build';
  description: string;
  file: string;
  args: string[];
  cwd: string;
}

export interface BuildPlan {
  root: string;
  platform: Platform;
  target: BuildTarget;
  toolchain: ToolchainTag;
  defines: Define[];
  jobs: number;
  /** Variables to set (on top of the caller's environment, minus `unset`). */
  env: Record<string, string>;
  /** Variables a stale edk2 environment may carry that would point the build elsewhere. */
  unset: string[];
  /** The `build` command's arguments. */
  buildArgs: string[];
  steps: BuildStep[];
  /** Adjustments made for the tree, to show the user. */
  notes: string[];
}

export interface PlanInput {
  tree: TreeInfo;
  arch: string;
  target?: BuildTarget;
  defines?: readonly Define[];
  jobs?: number;
  toolchain?: ToolchainTag;
  /** Cross-compiler prefix ('' when native). */
  crossPrefix: string;
  /** Python interpreter edksetup/BaseTools use. @default 'python3' */
  python?: string;
  /** Platform description to build instead of the default for `arch`. */
  dsc?: string;
}

/** Every variable edksetup.sh/BuildEnv would otherwise inherit (Debian's rules undefine them). */
export const EDK2_ENV_TO_CLEAR = [
  'WORKSPACE',
  'EDK_TOOLS_PATH',
  'CONF_PATH',
  'PACKAGES_PATH',
  'ECP_SOURCE',
  'EDK_SOURCE',
  'EFI_SOURCE',
  'EDK_TOOLS_BIN',
];

/**
 * The shell line that sources edksetup.sh and runs build with our argv. The build arguments
 * travel as positional parameters (never spliced into the script), and are moved aside before
 * sourcing because edksetup.sh parses "$@" itself.
 */
export const BUILD_SCRIPT =
  'set -e; args=("$@"); set --; . ./edksetup.sh >/dev/null; build "${args[@]}"';

export function planBuild(input: PlanInput): BuildPlan {
  const { tree } = input;
  const platform = { ...platformFor(input.arch), ...(input.dsc ? { dsc: input.dsc } : {}) };
  const target = input.target ?? 'RELEASE';
  const toolchain = chooseToolchainTag(tree, input.toolchain);
  const jobs = input.jobs ?? 1;
  if (!Number.isSafeInteger(jobs) || jobs < 1)
    throw new InvalidArgumentError(`Invalid job count '${jobs}': expected a positive integer`);
  const defines = new Map(input.defines ?? []);
  const notes: string[] = [];

  if (tree.shellNeedsSecureBootLib && platform.arch === 'aarch64') {
    const sb = defines.get('SECURE_BOOT_ENABLE');
    if (sb === undefined) {
      defines.set('SECURE_BOOT_ENABLE', 'TRUE');
      notes.push(
        'this tree (Debian/Ubuntu) links the UEFI shell against SecureBootVariableLib, which ArmVirtQemu provides only with Secure Boot: added -D SECURE_BOOT_ENABLE=TRUE',
      );
    } else if (sb !== 'TRUE') {
      throw new InvalidArgumentError(
        `This edk2 tree (Debian/Ubuntu patch "Disable the Shell when SecureBoot is enabled") links the UEFI shell against SecureBootVariableLib, which ArmVirtQemu only provides with SECURE_BOOT_ENABLE=TRUE; drop -D SECURE_BOOT_ENABLE=${sb}`,
      );
    }
  }

  const env: Record<string, string> = { PYTHON_COMMAND: input.python ?? 'python3' };
  if (input.crossPrefix) {
    // tools_def reads ENV(GCC_<ARCH>_PREFIX) for tag GCC and ENV(GCC5_<ARCH>_PREFIX) for GCC5;
    // X64 reads ENV(GCC_BIN)/ENV(GCC5_BIN). Set both spellings (reference §1.1).
    if (platform.edk2Arch === 'X64') {
      env['GCC_BIN'] = input.crossPrefix;
      env['GCC5_BIN'] = input.crossPrefix;
    } else {
      env[`GCC_${platform.edk2Arch}_PREFIX`] = input.crossPrefix;
      env[`GCC5_${platform.edk2Arch}_PREFIX`] = input.crossPrefix;
    }
  }

  const steps: BuildStep[] = [];
  for (const stub of tree.ltoStubs.filter((s) => s.arch === platform.arch)) {
    // debian/rules: $(GCC5_AARCH64_PREFIX)gcc -c -fpic liblto-aarch64.s -o liblto-aarch64.a
    steps.push({
      name: 'lto-stub',
      description: `assemble ${stub.output.slice(tree.root.length + 1)} (Debian ships only the .s)`,
      file: `${input.crossPrefix}gcc`,
      args: ['-c', '-fpic', stub.source, '-o', stub.output],
      cwd: tree.root,
    });
    notes.push(`assembling the GCC LTO stub ${stub.source.slice(tree.root.length + 1)}`);
  }
  if (!tree.baseToolsBuilt)
    steps.push({
      name: 'basetools',
      description: 'build BaseTools',
      file: 'make',
      args: ['-C', 'BaseTools', `-j${jobs}`],
      cwd: tree.root,
    });
  const buildArgs = [
    '-a',
    platform.edk2Arch,
    '-t',
    toolchain,
    '-p',
    platform.dsc,
    '-b',
    target,
    '-n',
    String(jobs),
    ...[...defines].flatMap(([k, v]) => ['-D', `${k}=${v}`]),
  ];
  steps.push({
    name: 'build',
    description: `build ${platform.dsc} (${platform.edk2Arch}, ${target}_${toolchain})`,
    file: 'bash',
    args: ['-c', BUILD_SCRIPT, 'bash', ...buildArgs],
    cwd: tree.root,
  });
  return {
    root: tree.root,
    platform,
    target,
    toolchain,
    defines: [...defines],
    jobs,
    env,
    unset: EDK2_ENV_TO_CLEAR,
    buildArgs,
    steps,
    notes,
  };
}

/** Steps that fetch a tree with git (non-recursive submodules, as edk2's ReadMe.rst says). */
export function planClone(url: string, ref: string, dir: string): BuildStep[] {
  if (url.startsWith('-') || ref.startsWith('-'))
    throw new InvalidArgumentError('--git URL and --ref must not start with "-"');
  return [
    {
      name: 'clone',
      description: `clone ${url} at ${ref}`,
      file: 'git',
      args: ['clone', '--depth', '1', '--branch', ref, '--', url, dir],
      cwd: '.',
    },
    {
      name: 'submodules',
      description: 'fetch submodules',
      file: 'git',
      args: ['-C', dir, 'submodule', 'update', '--init', '--depth', '1'],
      cwd: '.',
    },
  ];
}
