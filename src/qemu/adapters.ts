// The launcher's providers wired to the vmforge libraries: UEFI firmware through src/edk2
// (descriptor discovery + per-VM prepare), huge pages through src/hugetlbfs
// (planHugepageBackend), and disk images through the image engine (src/image: probing, backing
// chains, qcow2 overlays; an overlay over an NBD export reads the export's size through src/nbd's
// client).

import { open } from 'node:fs/promises';
import { join } from 'node:path';
import {
  EnvironmentError,
  InvalidArgumentError,
  fromSystemError,
  withContext,
} from '../core/index.js';
import { planHugepageBackend, type HugetlbHost } from '../hugetlbfs/index.js';
import { createImage, isQcow2, openImage, probeFormat } from '../image/index.js';
import { registerNbdProtocols } from '../nbd/open-uri.js';
import { resolveRelativeTo } from '../qcow2/index.js';
import { findFirmware, prepareFirmware } from '../edk2/index.js';
import type {
  FirmwareProvider,
  FirmwareRequest,
  PreparedFirmware,
  DiskImages,
  HugepageBackendRequest,
  HugepagePlanner,
  LaunchProviders,
  QomObject,
} from './providers.js';

/**
 * Huge-page backends from src/hugetlbfs. All regions are planned in one call, so the pool is
 * checked against the guest's total (and per host node when every region is bound to one node);
 * the objects are then cut per region with the launcher's ids, host nodes and policy.
 */
export function hugetlbfsPlanner(host?: HugetlbHost): HugepagePlanner {
  return {
    async planBackends(requests) {
      if (requests.length === 0) return [];
      const first = requests[0]!;
      const total = requests.reduce((s, r) => s + r.size, 0);
      const oneNodeEach = requests.every((r) => r.hostNodes?.length === 1);
      const plan = await planHugepageBackend({
        memory: total,
        pageSize: first.pageSize,
        backend: first.backend,
        prealloc: first.prealloc,
        share: first.share,
        ...(first.mount === undefined ? {} : { mount: first.mount }),
        ...(oneNodeEach
          ? { numa: requests.map((r) => ({ hostNode: r.hostNodes![0]!, size: r.size })) }
          : {}),
        // --dry-run shows the command line even when the pool is short today.
        check: !first.dryRun,
        ...(host ? { host } : {}),
      });
      const template = plan.objects[0]!.qom;
      return requests.map((r: HugepageBackendRequest, i): QomObject => {
        const {
          'host-nodes': _nodes,
          policy: _policy,
          ...common
        } = oneNodeEach ? plan.objects[i]!.qom : template;
        const obj: QomObject = {
          ...common,
          'qom-type': String(common['qom-type']),
          id: r.id,
          size: r.size,
        };
        if (r.hostNodes) obj['host-nodes'] = r.hostNodes;
        if (r.policy ?? (r.hostNodes ? 'bind' : undefined)) obj['policy'] = r.policy ?? 'bind';
        return obj;
      });
    },
  };
}

const MAX_CHAIN = 64;

/**
 * Disk images through the vmforge image engine. probeFormat() also walks a qcow2 image's
 * backing chain and refuses a backing file without a recorded format: QEMU would probe it, and a
 * raw image a guest has written a qcow2 header into would be opened as qcow2 (libvirt refuses
 * the same). Overlays are qcow2 images created by vmforge with the original as backing.
 */
export function engineDiskImages(): DiskImages {
  return {
    async probeFormat(path) {
      const format = await sniff(path);
      if (format === 'qcow2') await checkBackingChain(path);
      return format;
    },
    async createOverlay(req) {
      const backingFile = req.backing.kind === 'file' ? req.backing.path : req.backing.uri;
      // createImage opens the backing file for its size; nbd:// names go through src/nbd's
      // client once its schemes are in the image engine's protocol table.
      if (req.backing.kind === 'nbd') registerNbdProtocols();
      try {
        await createImage(req.path, {
          format: 'qcow2',
          backingFile,
          backingFormat: req.backingFormat,
        });
      } catch (err) {
        throw withContext(err, `Could not create the snapshot overlay '${req.path}'`);
      }
    },
  };
}

async function sniff(path: string): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fromSystemError(err, `Could not open disk '${path}'`);
  }
  try {
    const { size } = await fh.stat();
    const head = new Uint8Array(Math.min(512, size));
    await fh.read(head, 0, head.length, 0);
    return probeFormat(head, size, path);
  } finally {
    await fh.close();
  }
}

async function checkBackingChain(top: string): Promise<void> {
  let path = top;
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    const dev = await openImage(path, { format: 'qcow2', backing: 'none', noIO: true });
    try {
      if (!isQcow2(dev)) return;
      const { backingFile, backingFormat } = dev.header;
      if (backingFile === undefined) return;
      if (backingFormat === undefined) {
        throw new InvalidArgumentError(
          `backing file '${backingFile}' of '${path}' has no recorded format, and vmforge does not let QEMU probe it; ` +
            `record it with: vmforge-img rebase -u -F <raw|qcow2> -b '${backingFile}' '${path}'`,
          { code: 'VMF_BACKING_FORMAT_MISSING' },
        );
      }
      const next = resolveRelativeTo(path, backingFile);
      if (backingFormat !== 'qcow2' || /^[a-z][a-z0-9+.-]*:\/\//i.test(next)) return;
      path = next;
    } finally {
      await dev.close();
    }
  }
  throw new EnvironmentError(`backing chain of '${top}' is deeper than ${MAX_CHAIN} images`);
}

/**
 * UEFI firmware from src/edk2: the first firmware.json descriptor matching arch, machine and
 * secure boot (spec false = must not have it), code and vars copied into the run directory,
 * aarch64 images padded to 64 MiB, plus the -machine/-global settings the descriptor requires.
 */
export function edk2FirmwareProvider(): FirmwareProvider {
  const findOptions = (req: FirmwareRequest) => ({
    arch: req.arch,
    machine: req.machine,
    secureBoot: req.secureBoot,
    ...(req.signal ? { signal: req.signal } : {}),
  });
  return {
    async locate(req) {
      // What prepare() will write, without writing it (for --dry-run).
      const ext = (f: string): string => (f === 'qcow2' ? 'qcow2' : 'fd');
      let format: string;
      if (req.code) format = (await sniff(req.code)) === 'qcow2' ? 'qcow2' : 'raw';
      else format = (await findFirmware(findOptions(req))).code.format;
      const f = format === 'qcow2' ? 'qcow2' : 'raw';
      return {
        code: join(req.outDir, `code.${ext(f)}`),
        vars: join(req.outDir, `vars.${ext(f)}`),
        format: f,
      };
    },
    async prepare(req): Promise<PreparedFirmware> {
      const p = await prepareFirmware({
        ...findOptions(req),
        outDir: req.outDir,
        ...(req.code ? { code: req.code } : {}),
        ...(req.varsTemplate ? { varsTemplate: req.varsTemplate } : {}),
      });
      if (!p.vars) {
        throw new InvalidArgumentError(
          `${p.code.from} has no variable store to go with it: set firmware.varsTemplate (the VARS file built with it)`,
          { code: 'VMF_FIRMWARE_NO_VARS' },
        );
      }
      return {
        code: p.code.path,
        vars: p.vars.path,
        format: p.code.format,
        machineProperties: p.machineProperties.map((kv): [string, string] => {
          const eq = kv.indexOf('=');
          return [kv.slice(0, eq), kv.slice(eq + 1)];
        }),
        globals: p.globals,
      };
    },
  };
}

/** The providers `vmforge run` uses. */
export function defaultProviders(): LaunchProviders {
  return {
    firmware: edk2FirmwareProvider(),
    hugepages: hugetlbfsPlanner(),
    images: engineDiskImages(),
  };
}
