// prepareFirmware: per-VM firmware files. The code image is copied (a VM never maps the shared
// file read-write), the vars image is instantiated from the template (firmware.json: "the NVRAM
// template … is never mapped into virtual machines, only individual copies of it are"), and on
// aarch64 both are zero-padded to exactly 64 MiB, the size of each virt pflash device. Inputs
// are sniffed (raw or qcow2) and checked: a code image must contain a firmware volume, a vars
// template must be a variable-store volume or blank (Debian's AAVMF_VARS.fd is 64 MiB of zeros,
// which ArmVirtQemu formats on first boot).

import { constants } from 'node:fs';
import { copyFile, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
  fromSystemError,
  systemErrorCode,
} from '../core/index.js';
import { PFLASH_SIZE, hostQemuArch } from './constants.js';
import type { FlashMode } from './descriptor.js';
import { findFirmware, type FindFirmwareOptions, type FirmwareMatch } from './find.js';
import { findFirmwareVolumes, isBlankImage, type FirmwareVolume } from './firmware-volume.js';
import { sniffImage, type SniffedImage } from './image-format.js';
import { openFirmwareReader } from './image-reader.js';

export interface PrepareFirmwareOptions extends FindFirmwareOptions {
  /** Directory for the per-VM files (created if needed). */
  outDir: string;
  /** Firmware code image; when absent, findFirmware(options) picks one from the descriptors. */
  code?: string;
  /** Vars template; when absent with `code`: aarch64 gets a blank store, others none. */
  varsTemplate?: string;
  /** File names inside outDir. @default code.fd / vars.fd (.qcow2 for qcow2 inputs) */
  codeName?: string;
  varsName?: string;
  /**
   * An existing vars file in outDir is the VM's variable store and is kept (libvirt does the
   * same); true replaces it with a fresh copy of the template.
   * @default false
   */
  resetVars?: boolean;
}

export interface PreparedFile {
  path: string;
  format: 'raw' | 'qcow2';
  /** Size the guest sees. */
  size: number;
  /** Firmware volumes found (for qcow2, in the guest-visible contents). */
  volumes: Pick<FirmwareVolume, 'offset' | 'fvLength' | 'kind' | 'fileSystemGuid'>[];
  /** The template or code file it was made from. */
  from: string;
}

export interface PreparedFirmware {
  arch: string;
  mode: FlashMode;
  code: PreparedFile;
  vars?: PreparedFile & { reused: boolean; blank: boolean };
  /** Zero-padded to the architecture's pflash size. */
  padded: boolean;
  /** The descriptor used, when the firmware was found rather than given. */
  match?: FirmwareMatch;
  /** -drive arguments for qemu-system-<arch> (firmware.json, pre-4.0 compatible form). */
  qemuArgs: string[];
  /** `-machine` properties the firmware needs (smm=on for requires-smm). */
  machineProperties: string[];
  /** `-global` values it needs (pflash secure=on for SMM secure boot). */
  globals: string[];
  notes: string[];
}

async function volumesOf(
  path: string,
  format: 'raw' | 'qcow2',
  signal?: AbortSignal,
): Promise<{ volumes: FirmwareVolume[]; blank: boolean }> {
  const r = await openFirmwareReader(path, format);
  try {
    const volumes = await findFirmwareVolumes(r, signal ? { signal } : {});
    const blank = volumes.length === 0 && (await isBlankImage(r, signal));
    return { volumes, blank };
  } finally {
    await r.close();
  }
}

function checkQcow2(path: string, s: SniffedImage): void {
  if (s.qcow2?.hasBackingFile)
    throw new NotSupportedError(
      `'${path}' is a qcow2 image with a backing file; firmware must be self-contained`,
    );
  if (s.qcow2?.encrypted)
    throw new NotSupportedError(
      `'${path}' is an encrypted qcow2 image; firmware cannot be encrypted`,
    );
}

/** Check a code image: sniff, then (raw) require a code volume. */
async function inspectCode(path: string, signal?: AbortSignal) {
  const s = await sniffImage(path);
  if (s.format === 'qcow2') checkQcow2(path, s);
  const { volumes } = await volumesOf(path, s.format, signal);
  const code = volumes.filter((v) => v.kind === 'ffs2' || v.kind === 'ffs3');
  if (code.length === 0)
    throw new CorruptImageError(
      volumes.length
        ? `'${path}' is not UEFI firmware code: it holds only ${volumes.map((v) => v.kind).join(', ')} volumes (a vars image?)`
        : `'${path}' is not UEFI firmware: no valid firmware volume header (EFI_FIRMWARE_VOLUME_HEADER, '_FVH' at offset 40) found`,
      { code: 'VMF_FW_NOT_FV' },
    );
  return { sniff: s, volumes };
}

/** Check a vars template: a variable-store volume, or blank flash. */
async function inspectVars(path: string, signal?: AbortSignal) {
  const s = await sniffImage(path);
  if (s.format === 'qcow2') checkQcow2(path, s);
  const { volumes, blank } = await volumesOf(path, s.format, signal);
  if (!blank && !volumes.some((v) => v.kind === 'nvram'))
    throw new CorruptImageError(
      volumes.length
        ? `'${path}' is not a UEFI variable store: its volumes are ${volumes.map((v) => v.kind).join(', ')} (firmware code?)`
        : `'${path}' is not a UEFI variable store: no firmware volume header and not blank`,
      { code: 'VMF_FW_NOT_FV' },
    );
  return { sniff: s, volumes, blank };
}

function summary(volumes: FirmwareVolume[]): PreparedFile['volumes'] {
  return volumes.map(({ offset, fvLength, kind, fileSystemGuid }) => ({
    offset,
    fvLength,
    kind,
    fileSystemGuid,
  }));
}

/** Check the raw/qcow2 size against the pflash size (aarch64: exactly 64 MiB after padding). */
function checkSize(path: string, s: SniffedImage, required: number | undefined): void {
  if (required === undefined) return;
  if (s.virtualSize > required)
    throw new CorruptImageError(
      `'${path}' is ${s.virtualSize} bytes, larger than the ${required}-byte pflash device`,
    );
  if (s.format === 'qcow2' && s.virtualSize !== required)
    throw new NotSupportedError(
      `'${path}' is a qcow2 image of ${s.virtualSize} bytes; the pflash device needs exactly ${required} and a qcow2 image cannot be padded in place (convert it to raw first)`,
    );
}

/** Escape a value for QEMU's option syntax (a comma is written as two). */
function qemuOptValue(v: string): string {
  return v.replace(/,/g, ',,');
}

async function copyAtomically(from: string, to: string, padTo: number | undefined): Promise<void> {
  const tmp = `${to}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await copyFile(from, tmp, constants.COPYFILE_FICLONE); // reflink where the fs can
    if (padTo !== undefined) {
      const fh = await open(tmp, 'r+');
      try {
        if ((await fh.stat()).size < padTo) await fh.truncate(padTo); // sparse zeros
      } finally {
        await fh.close();
      }
    }
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    throw fromSystemError(err, `Could not write '${to}'`);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (err) {
    if (systemErrorCode(err) === 'ENOENT') return false;
    throw fromSystemError(err, `Could not access '${p}'`);
  }
}

export async function prepareFirmware(options: PrepareFirmwareOptions): Promise<PreparedFirmware> {
  if (!options.outDir) throw new InvalidArgumentError('An output directory (--out) is required');
  const signal = options.signal;
  const notes: string[] = [];
  let match: FirmwareMatch | undefined;
  let codeSrc: string;
  let varsSrc: string | undefined;
  let arch: string;
  let mode: FlashMode;
  let features: string[] = [];
  if (options.code) {
    arch = options.arch ?? hostQemuArch();
    codeSrc = resolve(options.code);
    varsSrc = options.varsTemplate ? resolve(options.varsTemplate) : undefined;
    mode = varsSrc || PFLASH_SIZE[arch] ? 'split' : 'stateless';
  } else {
    if (options.varsTemplate)
      throw new InvalidArgumentError(
        '--vars-template needs --code (or neither, to use a descriptor)',
      );
    match = await findFirmware(options);
    if (match.device !== 'flash')
      throw new NotSupportedError(`${match.name} maps firmware as ${match.device}, not pflash`);
    arch = match.arch;
    codeSrc = match.code.path;
    varsSrc = match.varsTemplate?.path;
    mode = match.mode ?? 'split';
    features = match.features;
  }
  const padTo = PFLASH_SIZE[arch];

  const code = await inspectCode(codeSrc, signal);
  checkSize(codeSrc, code.sniff, padTo);
  if (match && match.code.format !== code.sniff.format)
    notes.push(
      `${match.name} says ${match.code.format} but ${codeSrc} is ${code.sniff.format}; using ${code.sniff.format}`,
    );

  const outDir = resolve(options.outDir);
  const ext = (f: 'raw' | 'qcow2') => (f === 'qcow2' ? 'qcow2' : 'fd');
  const codeOut = join(outDir, options.codeName ?? `code.${ext(code.sniff.format)}`);
  if (codeOut === codeSrc || codeOut === varsSrc)
    throw new InvalidArgumentError(`Refusing to overwrite the source firmware '${codeOut}'`);
  try {
    await mkdir(outDir, { recursive: true });
  } catch (err) {
    throw fromSystemError(err, `Could not create '${outDir}'`);
  }
  signal?.throwIfAborted();
  await copyAtomically(codeSrc, codeOut, code.sniff.format === 'raw' ? padTo : undefined);
  const codeFile: PreparedFile = {
    path: codeOut,
    format: code.sniff.format,
    size: padTo ?? code.sniff.virtualSize,
    volumes: summary(code.volumes),
    from: codeSrc,
  };

  let vars: PreparedFirmware['vars'];
  if (mode === 'split') {
    const blankFormat = 'raw';
    const varsFormat = varsSrc ? (await sniffImage(varsSrc)).format : blankFormat;
    const varsOut = join(outDir, options.varsName ?? `vars.${ext(varsFormat)}`);
    if (varsOut === codeSrc || varsOut === varsSrc)
      throw new InvalidArgumentError(`Refusing to overwrite the source firmware '${varsOut}'`);
    if (varsOut === codeOut) throw new InvalidArgumentError('Code and vars file names must differ');
    if (!options.resetVars && (await exists(varsOut))) {
      const kept = await inspectVars(varsOut, signal);
      checkSize(varsOut, kept.sniff, padTo);
      if (padTo !== undefined && kept.sniff.virtualSize !== padTo)
        throw new CorruptImageError(
          `Existing '${varsOut}' is ${kept.sniff.virtualSize} bytes, not ${padTo}; pass resetVars to recreate it`,
        );
      vars = {
        path: varsOut,
        format: kept.sniff.format,
        size: kept.sniff.virtualSize,
        volumes: summary(kept.volumes),
        from: varsOut,
        reused: true,
        blank: kept.blank,
      };
      notes.push(`kept the existing variable store ${varsOut}`);
    } else if (varsSrc) {
      const t = await inspectVars(varsSrc, signal);
      checkSize(varsSrc, t.sniff, padTo);
      await copyAtomically(varsSrc, varsOut, t.sniff.format === 'raw' ? padTo : undefined);
      vars = {
        path: varsOut,
        format: t.sniff.format,
        size: padTo ?? t.sniff.virtualSize,
        volumes: summary(t.volumes),
        from: varsSrc,
        reused: false,
        blank: t.blank,
      };
    } else {
      // No template (aarch64 with only QEMU_EFI.fd): a blank store, as Debian ships.
      const size = padTo!;
      const tmp = `${varsOut}.tmp-${randomBytes(4).toString('hex')}`;
      try {
        const fh = await open(tmp, 'w');
        await fh.truncate(size);
        await fh.close();
        await rename(tmp, varsOut);
      } catch (err) {
        await rm(tmp, { force: true });
        throw fromSystemError(err, `Could not write '${varsOut}'`);
      }
      vars = {
        path: varsOut,
        format: 'raw',
        size,
        volumes: [],
        from: '(blank)',
        reused: false,
        blank: true,
      };
      notes.push('no vars template given: created a blank variable store');
    }
  }

  const qemuArgs = [
    '-drive',
    `if=pflash,unit=0,format=${code.sniff.format},readonly=${mode === 'combined' ? 'off' : 'on'},file=${qemuOptValue(codeOut)}`,
    ...(vars
      ? ['-drive', `if=pflash,unit=1,format=${vars.format},file=${qemuOptValue(vars.path)}`]
      : []),
  ];
  const smm = features.includes('requires-smm');
  return {
    arch,
    mode,
    code: codeFile,
    ...(vars ? { vars } : {}),
    padded: padTo !== undefined,
    ...(match ? { match } : {}),
    qemuArgs,
    machineProperties: smm ? ['smm=on'] : [],
    globals:
      smm && features.includes('secure-boot')
        ? ['driver=cfi.pflash01,property=secure,value=on']
        : [],
    notes,
  };
}
