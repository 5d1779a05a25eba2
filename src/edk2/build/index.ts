// buildFirmware: build ArmVirtQemu (aarch64) or OVMF (x86_64) from an edk2 tree and register
// the result in the firmware cache like fetched firmware. Order: prerequisites (fail early, name
// the Debian packages), source (--git clones), tree inspection (toolchain tag, Debian quirks),
// LTO stub, BaseTools, build, output discovery, registration.

import { availableParallelism } from 'node:os';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { EnvironmentError, InvalidArgumentError } from '../../core/index.js';
import { registerFirmware, type CacheManifest } from '../cache.js';
import { defaultCacheDir, type Env } from '../paths.js';
import { findBuildOutputs, type BuildOutputs } from './outputs.js';
import {
  parseDefines,
  planBuild,
  planClone,
  platformFor,
  type BuildPlan,
  type BuildStep,
  type BuildTarget,
  type Define,
} from './plan.js';
import {
  buildPrerequisites,
  checkPrerequisites,
  crossPrefix as defaultCrossPrefix,
  describeMissing,
  type PrerequisiteStatus,
} from './prerequisites.js';
import { openLog, runStep } from './runner.js';
import { inspectTree, type ToolchainTag } from './tree.js';

export interface BuildProgress {
  phase: 'prerequisites' | 'source' | 'lto-stub' | 'basetools' | 'build' | 'outputs' | 'register';
  message: string;
  /** Modules the edk2 build has reported so far ("Building ... X.inf"). */
  modules?: number;
}

export interface BuildFirmwareOptions {
  /** aarch64 (ArmVirtQemu) or x86_64 (OvmfPkgX64). */
  arch: string;
  /** An edk2 tree to build in. One of `source` and `git` is required. */
  source?: string;
  /** Clone this repository at this tag/branch into `dir` (default: <cacheDir>/src/edk2-<ref>). */
  git?: { url: string; ref: string; dir?: string };
  /** @default 'RELEASE' */
  target?: BuildTarget;
  /** -D defines, as `NAME=VALUE` strings or pairs. */
  defines?: readonly string[] | readonly Define[];
  /** Parallel jobs for make and build -n. @default os.availableParallelism() */
  jobs?: number;
  /** Toolchain tag; by default the newest the tree defines (GCC, else GCC5). */
  toolchain?: ToolchainTag;
  /** Cross-compiler prefix. @default aarch64-linux-gnu- / x86_64-linux-gnu- when not native */
  crossPrefix?: string;
  /** Platform .dsc to build instead of the default. */
  dsc?: string;
  /** Build log. @default <tree>/Build/vmforge-build-<arch>.log */
  logFile?: string;
  /** Firmware cache to register the result in; false skips registration. */
  cacheDir?: string | false;
  /** @default process.env */
  env?: Env;
  /**
   * Skip the host prerequisite check (a non-Debian layout where, say, uuid.h lives elsewhere);
   * a missing tool then fails inside the build instead of up front. @default false
   */
  skipPrerequisites?: boolean;
  /** Plan only: check prerequisites, inspect the tree, return the plan without running it. */
  dryRun?: boolean;
  signal?: AbortSignal;
  onProgress?: (e: BuildProgress) => void;
}

export interface BuildFirmwareResult {
  plan: BuildPlan;
  prerequisites: PrerequisiteStatus[];
  logPath: string;
  outputs?: BuildOutputs;
  manifest?: CacheManifest;
  durationMs: number;
}

function toDefines(d: BuildFirmwareOptions['defines']): Define[] {
  if (!d) return [];
  if (d.every((x) => typeof x === 'string')) return parseDefines(d as string[]);
  return parseDefines((d as Define[]).map(([k, v]) => `${k}=${v}`));
}

/** Descriptor features implied by the build's defines (firmware.json FirmwareFeature). */
export function featuresFor(
  arch: string,
  target: BuildTarget,
  defines: readonly Define[],
): string[] {
  const d = new Map(defines);
  const f: string[] = [];
  if (arch === 'x86_64') f.push('acpi-s3');
  if (d.get('SMM_REQUIRE') === 'TRUE') f.push('requires-smm');
  if (d.get('SECURE_BOOT_ENABLE') === 'TRUE') f.push('secure-boot');
  const silent = d.get('DEBUG_PRINT_ERROR_LEVEL') === '0x80000000';
  if (target !== 'RELEASE' && !silent)
    f.push(arch === 'x86_64' ? 'verbose-dynamic' : 'verbose-static');
  return f.sort();
}

function buildEnv(base: Env, plan: BuildPlan): Env {
  const drop = new Set(plan.unset);
  const kept = Object.entries(base).filter(([k]) => !drop.has(k));
  return { ...Object.fromEntries(kept), ...plan.env };
}

export async function buildFirmware(options: BuildFirmwareOptions): Promise<BuildFirmwareResult> {
  const started = Date.now();
  const env = options.env ?? process.env;
  const progress = options.onProgress ?? (() => undefined);
  const platform = platformFor(options.arch);
  if ((options.source === undefined) === (options.git === undefined))
    throw new InvalidArgumentError(
      'Give exactly one of a source tree (--source) or --git URL --ref TAG',
    );
  const defines = toDefines(options.defines);
  const jobs = options.jobs ?? availableParallelism();
  const prefix = options.crossPrefix ?? defaultCrossPrefix(platform.arch);

  progress({ phase: 'prerequisites', message: 'checking host prerequisites' });
  const prerequisites = options.skipPrerequisites
    ? []
    : await checkPrerequisites(
        buildPrerequisites(platform.arch, { git: options.git !== undefined, crossPrefix: prefix }),
        env,
      );
  const missing = describeMissing(prerequisites);
  if (missing)
    throw new EnvironmentError(missing, {
      code: 'VMF_FW_PREREQ',
      details: { missing: prerequisites.filter((p) => !p.found).map((p) => p.package) },
    });

  const cacheDir =
    options.cacheDir === false ? undefined : (options.cacheDir ?? defaultCacheDir(env));
  let root: string;
  let cloneSteps: BuildStep[] = [];
  if (options.git) {
    const base = cacheDir ?? defaultCacheDir(env);
    root = resolve(
      options.git.dir ?? join(base, 'src', `edk2-${options.git.ref.replace(/[^\w.-]+/g, '_')}`),
    );
    cloneSteps = planClone(options.git.url, options.git.ref, root);
  } else {
    root = resolve(options.source!);
  }
  const logPath = resolve(
    options.logFile ?? join(root, 'Build', `vmforge-build-${platform.arch}.log`),
  );

  if (options.dryRun && cloneSteps.length) {
    // Nothing to inspect yet: return the clone steps and a plan with assumed tree facts.
    const plan = planBuild({
      tree: {
        root,
        toolchainTags: ['GCC', 'GCC5'],
        shellNeedsSecureBootLib: false,
        ltoStubs: [],
        baseToolsBuilt: false,
      },
      arch: platform.arch,
      target: options.target ?? 'RELEASE',
      defines,
      jobs,
      crossPrefix: prefix,
      ...(options.toolchain ? { toolchain: options.toolchain } : {}),
      ...(options.dsc ? { dsc: options.dsc } : {}),
    });
    plan.steps.unshift(...cloneSteps);
    plan.notes.push(
      'dry run with --git: tree facts (toolchain tag, quirks) are known only after cloning',
    );
    return { plan, prerequisites, logPath, durationMs: Date.now() - started };
  }

  await mkdir(dirname(logPath), { recursive: true });
  const log = openLog(logPath);
  try {
    const run = (step: BuildStep, phase: BuildProgress['phase'], plan?: BuildPlan) => {
      let modules = 0;
      return runStep(step, {
        env: plan ? buildEnv(env, plan) : env,
        log,
        logPath,
        ...(options.signal ? { signal: options.signal } : {}),
        onLine: (line) => {
          // AutoGen announces each module ("Building ... X.inf"); make then links each one
          // ("gcc -o …/X.dll"): either counts as a step forward.
          const m =
            /^Building \.\.\. (\S+)/.exec(line) ?? /gcc"? -o \S*\/([^/\s]+\.dll) /.exec(line);
          if (m) progress({ phase, message: m[1]!.split('/').slice(-1)[0]!, modules: ++modules });
        },
      });
    };
    for (const step of cloneSteps) {
      progress({ phase: 'source', message: step.description });
      await run(step, 'source');
    }
    const tree = await inspectTree(root);
    const plan = planBuild({
      tree,
      arch: platform.arch,
      target: options.target ?? 'RELEASE',
      defines,
      jobs,
      crossPrefix: prefix,
      ...(options.toolchain ? { toolchain: options.toolchain } : {}),
      ...(options.dsc ? { dsc: options.dsc } : {}),
    });
    if (options.dryRun) return { plan, prerequisites, logPath, durationMs: Date.now() - started };
    for (const note of plan.notes) log.write(`### vmforge note: ${note}\n`);
    for (const step of plan.steps) {
      const phase = step.name === 'clone' || step.name === 'submodules' ? 'source' : step.name;
      progress({ phase, message: step.description });
      await run(step, phase, plan);
    }
    progress({ phase: 'outputs', message: 'looking for the firmware images' });
    const outputs = await findBuildOutputs(root, plan.platform, plan.target, plan.toolchain);
    let manifest: CacheManifest | undefined;
    if (cacheDir) {
      progress({ phase: 'register', message: `registering in ${cacheDir}` });
      const tags = [
        `-a ${plan.platform.edk2Arch}`,
        `-p ${plan.platform.dsc}`,
        `-t ${plan.toolchain}`,
        `-b ${plan.target}`,
        ...plan.defines.map(([k, v]) => `-D ${k}=${v}`),
      ];
      manifest = await registerFirmware({
        cacheDir,
        name: `build-${platform.arch}-${plan.target.toLowerCase()}`,
        arch: platform.arch,
        code: { from: outputs.code },
        ...(outputs.vars ? { vars: { from: outputs.vars } } : {}),
        description: `UEFI firmware for ${platform.arch} built by vmforge from ${root} (${plan.target}_${plan.toolchain})`,
        machines:
          platform.arch === 'x86_64'
            ? new Map(plan.defines).get('SMM_REQUIRE') === 'TRUE'
              ? ['pc-q35-*']
              : ['pc-q35-*', 'pc-i440fx-*']
            : ['virt-*'],
        features: featuresFor(platform.arch, plan.target, plan.defines),
        tags,
        source: { kind: 'build', root, args: plan.buildArgs, log: logPath },
        ...(options.signal ? { signal: options.signal } : {}),
      });
    }
    return {
      plan,
      prerequisites,
      logPath,
      outputs,
      ...(manifest ? { manifest } : {}),
      durationMs: Date.now() - started,
    };
  } finally {
    await new Promise<void>((r) => log.end(r));
  }
}

export {
  parseDefines,
  planBuild,
  planClone,
  PLATFORMS,
  type BuildPlan,
  type BuildTarget,
} from './plan.js';
export {
  buildPrerequisites,
  checkPrerequisites,
  crossPrefix,
  describeMissing,
} from './prerequisites.js';
export {
  chooseToolchainTag,
  inspectTree,
  toolchainTagsOf,
  type ToolchainTag,
  type TreeInfo,
} from './tree.js';
export { findBuildOutputs, type BuildOutputs } from './outputs.js';
