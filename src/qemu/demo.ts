// The whole pipeline in one call: build a UEFI-bootable disk (a FAT file system whose
// startup.nsh prints a marker and powers off, inside a qcow2 made by the vmforge engine), export
// it with vmforge's NBD server (in-process, on a unix socket), boot QEMU from the export's
// nbd+unix:// URI under UEFI, and wait for the marker. It reports each step through `onStep` and
// never prints. Missing host tools are reported all at once with the Debian packages that
// provide them.

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { stat } from 'node:fs/promises';
import { EnvironmentError, fromSystemError } from '../core/index.js';
import { createImage, openImage } from '../image/index.js';
import { NbdServer } from '../nbd/server.js';
import { formatNbdUri } from '../nbd/uri.js';
import { findFirmware, FIRMWARE_PACKAGES } from '../edk2/index.js';
import type { Arch } from './model.js';
import { normalizeSpec } from './spec/normalize.js';
import { Vm } from './vm.js';

export const DEMO_MARKER = 'vmforge demo: booted';

export interface DemoOptions {
  arch: Arch;
  /** Give up after this long. @default 180000 */
  timeoutMs?: number;
  /** Keep the work directory (image, serial log) here instead of a temporary one. */
  workDir?: string;
  onStep?: (message: string) => void;
  signal?: AbortSignal;
}

export interface DemoResult {
  workDir: string;
  image: string;
  /** The nbd+unix:// URI QEMU booted from. */
  nbdUri: string;
  serialLog: string;
  accelNote: string | undefined;
  /** The serial console line that carried the marker. */
  markerLine: string;
  bootSeconds: number;
}

const TOOL_PACKAGES: Record<string, string> = {
  'qemu-system-aarch64': 'qemu-system-arm',
  'qemu-system-x86_64': 'qemu-system-x86',
  'mkfs.fat': 'dosfstools',
  mcopy: 'mtools',
};

async function onPath(tool: string): Promise<boolean> {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (
      dir &&
      (await stat(join(dir, tool)).then(
        (s) => s.isFile(),
        () => false,
      ))
    )
      return true;
  }
  return false;
}

/** Every missing tool or firmware, with the packages to install; empty when all is there. */
export async function demoPrerequisites(
  arch: Arch,
): Promise<{ missing: string[]; packages: string[] }> {
  const missing: string[] = [];
  const packages = new Set<string>();
  for (const tool of [`qemu-system-${arch}`, 'mkfs.fat', 'mcopy']) {
    if (!(await onPath(tool))) {
      missing.push(tool);
      packages.add(TOOL_PACKAGES[tool]!);
    }
  }
  try {
    await findFirmware({ arch, secureBoot: false });
  } catch {
    missing.push(`UEFI firmware for ${arch}`);
    packages.add(FIRMWARE_PACKAGES[arch] ?? 'ovmf');
  }
  return { missing, packages: [...packages] };
}

function exec(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new EnvironmentError(`${file} failed: ${err.trim()}`)),
    );
  });
}

/** Build the demo disk in `dir`: FAT with startup.nsh, copied into a vmforge qcow2. */
export async function buildDemoImage(dir: string): Promise<string> {
  const raw = join(dir, 'fat.raw');
  const nsh = join(dir, 'startup.nsh');
  const qcow2 = join(dir, 'demo.qcow2');
  // The marker is echoed in two quoted words so the shell's echo of the command line differs.
  const [a, ...b] = DEMO_MARKER.split(' ');
  await writeFile(nsh, `echo "${a}" "${b.join(' ')}"\r\nreset -s\r\n`);
  await exec('mkfs.fat', ['-C', '-n', 'VMFORGE', raw, '16384']);
  await exec('mcopy', ['-i', raw, nsh, '::/startup.nsh']);
  const bytes = await readFile(raw);
  await createImage(qcow2, { format: 'qcow2', size: bytes.length });
  const dev = await openImage(qcow2, { format: 'qcow2', readOnly: false });
  try {
    await dev.write(bytes, 0);
    await dev.flush();
  } finally {
    await dev.close();
  }
  await rm(raw);
  return qcow2;
}

/** An image served by vmforge's NBD server until close(). */
interface NbdExportHandle {
  socket: string;
  uri: string;
  close(): Promise<void>;
}

const DEMO_EXPORT = 'demo';

/**
 * Serve `image` read-write as export DEMO_EXPORT on a unix socket in `dir` (or, when that path
 * does not fit in sun_path's 108 bytes, in a private temporary directory).
 */
async function exportOverNbd(image: string, dir: string): Promise<NbdExportHandle> {
  let socket = join(dir, 'nbd.sock');
  let socketDir: string | undefined;
  if (Buffer.byteLength(socket) > 107) {
    socketDir = await mkdtemp(join(tmpdir(), 'vmforge-demo-nbd-'));
    socket = join(socketDir, 'nbd.sock');
  }
  const removeSocketDir = async (): Promise<void> => {
    if (socketDir) await rmdir(socketDir).catch(() => undefined);
  };
  const device = await openImage(image, { format: 'qcow2', readOnly: false }).catch(
    async (err: unknown) => {
      await removeSocketDir();
      throw err;
    },
  );
  const server = new NbdServer({ exports: [{ name: DEMO_EXPORT, device }] });
  const close = async (): Promise<void> => {
    try {
      // Every client has gone by now; close() flushes the export and removes the socket.
      await server.close();
    } finally {
      await device.close();
      await removeSocketDir();
    }
  };
  try {
    await server.listen({ kind: 'unix', path: socket });
  } catch (err) {
    await close();
    throw err;
  }
  const uri = formatNbdUri({ tls: false, transport: 'unix', socket, exportName: DEMO_EXPORT });
  return { socket, uri, close };
}

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const step = options.onStep ?? (() => undefined);
  const { missing, packages } = await demoPrerequisites(options.arch);
  if (missing.length > 0) {
    throw new EnvironmentError(
      `the demo needs ${missing.join(', ')}; install with: apt-get install ${packages.join(' ')}`,
      { code: 'VMF_DEMO_PREREQUISITES', details: { missing, packages } },
    );
  }
  let workDir: string;
  if (options.workDir === undefined) workDir = await mkdtemp(join(tmpdir(), 'vmforge-demo-'));
  else {
    workDir = options.workDir;
    try {
      await mkdir(workDir, { recursive: true });
    } catch (err) {
      throw fromSystemError(err, `Could not create the work directory '${workDir}'`);
    }
  }
  step(`building a UEFI-bootable qcow2 image in ${workDir}`);
  const image = await buildDemoImage(workDir);
  const nbd = await exportOverNbd(image, workDir);
  try {
    step(`exporting it over NBD on ${nbd.socket} (export '${DEMO_EXPORT}')`);
    const serialLog = join(workDir, 'serial.log');
    const model = normalizeSpec({
      name: 'vmforge-demo',
      arch: options.arch,
      memory: '512M',
      // The qcow2 is decoded by vmforge's server; QEMU sees the raw guest disk.
      disks: [{ uri: nbd.uri, format: 'raw' }],
      serial: { log: serialLog },
    });
    step(`booting ${nbd.uri} under UEFI (${options.arch}, ${model.machine.type})`);
    const started = Date.now();
    const vm = await Vm.launch(model, options.signal ? { signal: options.signal } : {});
    if (vm.plan.accelNote) step(vm.plan.accelNote);
    try {
      const m = await vm.waitForSerial(new RegExp(`.*${DEMO_MARKER}.*`), {
        timeoutMs: options.timeoutMs ?? 180_000,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const bootSeconds = (Date.now() - started) / 1000;
      return {
        workDir,
        image,
        nbdUri: nbd.uri,
        serialLog,
        accelNote: vm.plan.accelNote,
        markerLine: m[0].trim(),
        bootSeconds,
      };
    } finally {
      await vm.stop({ powerdownTimeoutMs: 5000 });
    }
  } finally {
    // After QEMU has stopped: its NBD connection is gone, nothing is left in flight.
    await nbd.close();
  }
}
