// What an edk2 source tree supports and needs, read from its files before building:
// - the toolchain tag: `GCC` since edk2-stable202305 (tools_def 3.00), `GCC5` before and removed
//   in stable202605; prefer GCC when the tree has it (reference §1.1);
// - Debian's quirks: the shell links SecureBootVariableLib (Debian patch "Disable the Shell when
//   SecureBoot is enabled"), which ArmVirt.dsc.inc maps only with SECURE_BOOT_ENABLE=TRUE; and
//   the GCC LTO stub library ships as liblto-aarch64.s, which debian/rules assembles into the .a
//   that tools_def's `-llto-aarch64` links.

import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EnvironmentError, NotSupportedError, systemErrorCode } from '../../core/index.js';

export type ToolchainTag = 'GCC' | 'GCC5';

export interface TreeInfo {
  root: string;
  /** Tags this tree's tools_def.template defines, preferred first. */
  toolchainTags: ToolchainTag[];
  /** The UEFI shell needs SecureBootVariableLib (Debian/Ubuntu patch). */
  shellNeedsSecureBootLib: boolean;
  /** LTO stub libraries referenced by tools_def that exist only as assembly sources. */
  ltoStubs: { arch: string; source: string; output: string }[];
  /** BaseTools' C tools are already built. */
  baseToolsBuilt: boolean;
}

async function readText(p: string): Promise<string | undefined> {
  try {
    return await readFile(p, 'utf8');
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return undefined;
    throw new EnvironmentError(`Could not read '${p}': ${(err as Error).message}`, { cause: err });
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Tags defined by a tools_def.template text, preferred first. */
export function toolchainTagsOf(toolsDef: string): ToolchainTag[] {
  const tags: ToolchainTag[] = [];
  // `*_GCC_AARCH64_CC_PATH = ENV(GCC_AARCH64_PREFIX)gcc` / `DEFINE GCC_ALL_CC_FLAGS`: the new tag.
  if (/^\s*\*_GCC_[A-Z0-9]+_CC_PATH\s*=/m.test(toolsDef)) tags.push('GCC');
  if (/^\s*\*_GCC5_[A-Z0-9]+_CC_PATH\s*=/m.test(toolsDef)) tags.push('GCC5');
  return tags;
}

/** Pick the tag: the caller's if the tree has it, else the preferred one. */
export function chooseToolchainTag(info: TreeInfo, wanted?: ToolchainTag): ToolchainTag {
  if (wanted) {
    if (!info.toolchainTags.includes(wanted))
      throw new NotSupportedError(
        `This edk2 tree has no toolchain tag ${wanted} (it has: ${info.toolchainTags.join(', ') || 'none'})`,
      );
    return wanted;
  }
  const tag = info.toolchainTags[0];
  if (!tag)
    throw new NotSupportedError(
      `No GCC or GCC5 toolchain in ${join(info.root, 'BaseTools/Conf/tools_def.template')}; this edk2 tree is too old or not an edk2 tree`,
    );
  return tag;
}

export async function inspectTree(root: string): Promise<TreeInfo> {
  const toolsDefPath = join(root, 'BaseTools', 'Conf', 'tools_def.template');
  const toolsDef = await readText(toolsDefPath);
  if (toolsDef === undefined || !(await exists(join(root, 'edksetup.sh'))))
    throw new EnvironmentError(
      `'${root}' is not an edk2 source tree (no edksetup.sh or BaseTools/Conf/tools_def.template)`,
      { code: 'VMF_FW_NOT_EDK2' },
    );
  const shellInf = (await readText(join(root, 'ShellPkg/Application/Shell/Shell.inf'))) ?? '';
  const shellNeedsSecureBootLib = /^\s*SecureBootVariableLib\s*$/m.test(shellInf);
  const ltoStubs: TreeInfo['ltoStubs'] = [];
  for (const arch of ['aarch64', 'arm']) {
    if (!toolsDef.includes(`-llto-${arch}`)) continue;
    const dir = join(root, 'ArmPkg', 'Library', 'GccLto');
    const output = join(dir, `liblto-${arch}.a`);
    const source = join(dir, `liblto-${arch}.s`);
    if (!(await exists(output)) && (await exists(source))) ltoStubs.push({ arch, source, output });
  }
  return {
    root,
    toolchainTags: toolchainTagsOf(toolsDef),
    shellNeedsSecureBootLib,
    ltoStubs,
    baseToolsBuilt: await exists(join(root, 'BaseTools', 'Source', 'C', 'bin', 'GenFw')),
  };
}
