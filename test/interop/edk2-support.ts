// Shared helpers for the edk2 interop tests: package-file gating, archive builders (raw ustar
// and zip writers, so tests can craft hostile entry names), a scriptable HTTP server, and a
// QEMU boot-to-UEFI-shell probe that always kills QEMU.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { crc32, deflateRawSync } from 'node:zlib';
import { describe, it } from 'vitest';
import { missingTools } from '../support/tools.js';

/** describe() needing files from Debian packages and tools: skipped visibly, failing in CI. */
export function describeWithPackages(
  needs: { files?: Record<string, string>; tools?: string[] },
  title: string,
  fn: () => void,
): void {
  const missing = [
    ...Object.entries(needs.files ?? {})
      .filter(([path]) => !existsSync(path))
      .map(([path, pkg]) => `${path} (${pkg})`),
    ...missingTools(needs.tools ?? []),
  ];
  if (missing.length === 0) describe(title, fn);
  else if (process.env['VMFORGE_REQUIRE_TOOLS'] === '1')
    describe(title, () => {
      it('has what it needs', () => {
        throw new Error(`VMFORGE_REQUIRE_TOOLS=1 but missing: ${missing.join(', ')}`);
      });
    });
  else describe.skip(`${title} [skipped: missing ${missing.join(', ')}]`, fn);
}

export const DEBIAN_QEMU_EFI = '/usr/share/qemu-efi-aarch64/QEMU_EFI.fd';

// --- archives ---------------------------------------------------------------------------------

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/** A POSIX ustar archive written byte by byte, names taken verbatim (so "../x" and "/x" work). */
export function ustar(
  entries: { name: string; data?: Uint8Array; type?: '0' | '2' | '5'; linkname?: string }[],
): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? new Uint8Array());
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100, 'utf8');
    h.write(octal(0o644, 8), 100);
    h.write(octal(0, 8), 108);
    h.write(octal(0, 8), 116);
    h.write(octal(e.type === '0' || e.type === undefined ? data.length : 0, 12), 124);
    h.write(octal(0, 12), 136);
    h.write('        ', 148);
    h.write(e.type ?? '0', 156);
    if (e.linkname) h.write(e.linkname, 157, 100);
    h.write('ustar\u000000', 257, 'latin1');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(octal(sum, 7) + ' ', 148, 'latin1');
    blocks.push(h);
    if ((e.type ?? '0') === '0') {
      blocks.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** A zip archive (deflate), names verbatim; `symlink` entries carry a Unix symlink mode. */
export function zip(entries: { name: string; data: Uint8Array; symlink?: boolean }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const comp = deflateRawSync(e.data);
    const crc = crc32(e.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0, 6);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(comp.length, 18);
    local.writeUInt32LE(e.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    locals.push(local, name, comp);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(0x031e, 4); // made by Unix
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(comp.length, 20);
    central.writeUInt32LE(e.data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(((e.symlink ? 0o120777 : 0o100644) << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += 30 + name.length + comp.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

// --- HTTP server -------------------------------------------------------------------------------

export type Route = (req: IncomingMessage, res: ServerResponse, hit: number) => void;

export interface TestServer {
  url: (path: string) => string;
  /** Requests seen per path, with their Range header. */
  seen: { path: string; range?: string }[];
  close(): Promise<void>;
}

/** Serve `body` honouring `Range: bytes=N-` the way a static file server does. */
export function serveBytes(
  body: Uint8Array,
  res: ServerResponse,
  req: IncomingMessage,
  cutAfter?: number,
): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  if (m && start >= body.length) {
    res.writeHead(416, { 'content-range': `bytes */${body.length}` });
    res.end();
    return;
  }
  const part = body.subarray(start);
  res.writeHead(m ? 206 : 200, {
    'content-length': String(part.length),
    'accept-ranges': 'bytes',
    ...(m ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
  });
  if (cutAfter !== undefined) {
    res.write(part.subarray(0, cutAfter), () => res.socket?.destroy());
    return;
  }
  res.end(part);
}

export async function startServer(routes: Record<string, Route>): Promise<TestServer> {
  const seen: TestServer['seen'] = [];
  const hits = new Map<string, number>();
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    seen.push({ path, ...(req.headers.range ? { range: req.headers.range } : {}) });
    const n = (hits.get(path) ?? 0) + 1;
    hits.set(path, n);
    const route = routes[path];
    if (!route) {
      res.writeHead(404).end('not found');
      return;
    }
    route(req, res, n);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (p) => `http://127.0.0.1:${port}${p}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

// --- QEMU --------------------------------------------------------------------------------------

export interface BootResult {
  reachedShell: boolean;
  serial: string;
}

/**
 * Boot qemu-system-<arch> (TCG) with the given pflash arguments and wait for the UEFI shell
 * prompt on the serial console. QEMU is always killed before this returns.
 */
export async function bootToShell(
  arch: 'aarch64' | 'x86_64',
  pflashArgs: string[],
  options: { timeoutMs?: number; extra?: string[] } = {},
): Promise<BootResult> {
  const machine = arch === 'aarch64' ? ['-machine', 'virt', '-cpu', 'max'] : ['-machine', 'q35'];
  const args = [
    ...machine,
    '-accel',
    'tcg',
    '-m',
    '256',
    '-nodefaults',
    '-nographic',
    '-serial',
    'stdio',
    '-monitor',
    'none',
    '-net',
    'none',
    ...(options.extra ?? []),
    ...pflashArgs,
  ];
  let child: ChildProcess | undefined;
  let serial = '';
  try {
    child = spawn(`qemu-system-${arch}`, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const c = child;
    const reachedShell = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), options.timeoutMs ?? 90_000);
      const onData = (b: Buffer) => {
        serial += b.toString('latin1');
        if (serial.includes('Shell>')) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      c.stdout!.on('data', onData);
      c.stderr!.on('data', onData);
      c.on('exit', () => {
        clearTimeout(timer);
        resolve(serial.includes('Shell>'));
      });
    });
    return { reachedShell, serial };
  } finally {
    if (child && child.exitCode === null) {
      const c = child;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    }
  }
}
