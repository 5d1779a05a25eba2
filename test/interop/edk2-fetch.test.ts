// fetch against a local HTTP server serving Debian's real QEMU_EFI.fd (qemu-efi-aarch64) raw,
// in .tar.gz and in .zip: happy paths, digest mismatch, a cut connection resumed with Range,
// 404/500/silent servers, a missing member, and hostile entry names.

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import {
  createServer as createNetServer,
  connect,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { fetchFirmware, listFirmware } from '../../src/edk2/index.js';
import { runFirmware } from '../../src/cli/firmware/index.js';
import { captureIO } from '../../src/cli/io.js';
import { tempDir } from '../support/tmp.js';
import {
  DEBIAN_QEMU_EFI,
  describeWithPackages,
  serveBytes,
  startServer,
  ustar,
  zip,
  type TestServer,
} from './edk2-support.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describeWithPackages(
  { files: { [DEBIAN_QEMU_EFI]: 'qemu-efi-aarch64' } },
  'firmware fetch over HTTP',
  () => {
    let fd: Buffer;
    let tgz: Buffer;
    let zipped: Buffer;
    let server: TestServer;
    const silentSockets = new Set<Socket>();

    beforeAll(async () => {
      fd = await readFile(DEBIAN_QEMU_EFI);
      tgz = gzipSync(
        ustar([
          { name: 'edk2/', type: '5' },
          { name: 'edk2/aarch64/QEMU_EFI.fd', data: fd },
          { name: 'edk2/README', data: Buffer.from('hi') },
        ]),
      );
      zipped = zip([
        { name: 'fw/QEMU_EFI.fd', data: fd },
        { name: 'fw/NOTES.txt', data: Buffer.from('x') },
      ]);
      server = await startServer({
        '/QEMU_EFI.fd': (req, res) => serveBytes(fd, res, req),
        '/edk2.tar.gz': (req, res) => serveBytes(tgz, res, req),
        '/edk2.zip': (req, res) => serveBytes(zipped, res, req),
        // First request dies halfway through the body; later ones honour Range.
        '/cut.fd': (req, res, hit) =>
          serveBytes(fd, res, req, hit === 1 ? fd.length / 2 : undefined),
        '/error500': (_req, res) => res.writeHead(500).end('boom'),
        '/silent': (req) => {
          silentSockets.add(req.socket); // never answer
        },
        '/evil-dotdot.tar': (req, res) =>
          serveBytes(
            ustar([
              { name: 'ok/QEMU_EFI.fd', data: fd },
              { name: '../../evil.fd', data: fd },
            ]),
            res,
            req,
          ),
        '/evil-abs.tar': (req, res) =>
          serveBytes(ustar([{ name: '/tmp/vmforge-evil-abs.fd', data: fd }]), res, req),
        '/evil-dotdot.zip': (req, res) =>
          serveBytes(zip([{ name: '../evil.fd', data: fd }]), res, req),
        '/evil-abs.zip': (req, res) =>
          serveBytes(zip([{ name: '/tmp/vmforge-evil-abs-zip.fd', data: fd }]), res, req),
        '/link.tar': (req, res) =>
          serveBytes(
            ustar([{ name: 'QEMU_EFI.fd', type: '2', linkname: '/etc/passwd' }]),
            res,
            req,
          ),
        '/notfw.bin': (req, res) => serveBytes(Buffer.alloc(65536, 0x41), res, req),
      });
    });
    afterAll(async () => {
      for (const s of silentSockets) s.destroy();
      await server.close();
    });

    async function cacheState(cache: string) {
      const ls = async (d: string) =>
        existsSync(d) ? (await readdir(d)).filter((n) => !n.startsWith('.')) : [];
      return {
        store: await ls(join(cache, 'store')),
        descriptors: await ls(join(cache, 'descriptors')),
        downloads: await ls(join(cache, 'downloads')),
      };
    }

    it('raw .fd: stored byte for byte, with manifest and descriptor that list/find see', async () => {
      const cache = await tempDir();
      const r = await fetchFirmware({
        source: server.url('/QEMU_EFI.fd'),
        sha256: sha(fd),
        arch: 'aarch64',
        cacheDir: cache,
      });
      expect(r).toMatchObject({ sha256: sha(fd), size: fd.length, container: 'raw', attempts: 1 });
      expect(sha(await readFile(r.path))).toBe(sha(fd));
      expect(r.vars).toBeDefined(); // aarch64: a blank 64 MiB template, as Debian's AAVMF_VARS.fd
      const list = await listFirmware({ dirs: [join(cache, 'descriptors')] });
      expect(list.entries[0]!.descriptor).toMatchObject({
        mapping: {
          device: 'flash',
          mode: 'split',
          executable: { filename: r.path, format: 'raw' },
        },
        targets: [{ architecture: 'aarch64', machines: ['virt-*'] }],
      });
      expect(
        JSON.parse(await readFile(join(cache, 'store', r.manifest.id, 'manifest.json'), 'utf8')),
      ).toMatchObject({
        source: { kind: 'fetch', url: server.url('/QEMU_EFI.fd'), sha256: sha(fd) },
      });
      expect((await cacheState(cache)).downloads).toEqual([]);
    });

    it('.tar.gz with --member, and a .zip with the single .fd found by default', async () => {
      const cache = await tempDir();
      const a = await fetchFirmware({
        source: server.url('/edk2.tar.gz'),
        sha256: sha(tgz),
        member: './edk2/aarch64/QEMU_EFI.fd',
        arch: 'aarch64',
        cacheDir: cache,
      });
      expect(a).toMatchObject({ container: 'tar.gz', member: 'edk2/aarch64/QEMU_EFI.fd' });
      expect(sha(await readFile(a.path))).toBe(sha(fd));
      const b = await fetchFirmware({
        source: server.url('/edk2.zip'),
        sha256: sha(zipped),
        arch: 'aarch64',
        cacheDir: cache,
      });
      expect(b).toMatchObject({ container: 'zip', member: 'fw/QEMU_EFI.fd' });
      expect(sha(await readFile(b.path))).toBe(sha(fd));
    });

    it('the CLI prints the stored path (and JSON with path, sha256, size, source)', async () => {
      const cache = await tempDir();
      const cap = captureIO({ HOME: cache });
      const code = await runFirmware(
        [
          'fetch',
          server.url('/edk2.zip'),
          '--sha256',
          sha(zipped),
          '--arch',
          'aarch64',
          '--cache-dir',
          cache,
          '--json',
        ],
        cap.io,
      );
      expect(cap.err).toBe('');
      expect(code).toBe(0);
      const out = JSON.parse(cap.out) as Record<string, unknown>;
      expect(out).toMatchObject({
        sha256: sha(zipped),
        size: fd.length,
        source: server.url('/edk2.zip'),
        member: 'fw/QEMU_EFI.fd',
      });
      expect(existsSync(out['path'] as string)).toBe(true);
    });

    it('a wrong digest is an error and leaves nothing in the cache', async () => {
      const cache = await tempDir();
      const wrong = sha(Buffer.from('something else'));
      const err = await fetchFirmware({
        source: server.url('/QEMU_EFI.fd'),
        sha256: wrong,
        arch: 'aarch64',
        cacheDir: cache,
      }).catch((e: Error) => e);
      expect(err).toMatchObject({ code: 'VMF_FW_DIGEST_MISMATCH' });
      expect((err as Error).message).toBe(
        `SHA-256 mismatch for '${server.url('/QEMU_EFI.fd')}': expected ${wrong}, got ${sha(fd)}; nothing was stored`,
      );
      expect(await cacheState(cache)).toEqual({ store: [], descriptors: [], downloads: [] });
    });

    it('a connection cut halfway is resumed with a Range request', async () => {
      const cache = await tempDir();
      const before = server.seen.length;
      const r = await fetchFirmware({
        source: server.url('/cut.fd'),
        sha256: sha(fd),
        arch: 'aarch64',
        cacheDir: cache,
        retryDelayMs: 10,
      });
      const reqs = server.seen.slice(before).filter((s) => s.path === '/cut.fd');
      expect(reqs[0]!.range).toBeUndefined();
      expect(reqs.length).toBe(2);
      const resumeAt = Number(/^bytes=(\d+)-$/.exec(reqs[1]!.range!)![1]);
      expect(resumeAt).toBeGreaterThan(0);
      expect(resumeAt).toBeLessThanOrEqual(fd.length / 2);
      expect(r.resumedAt).toEqual([resumeAt]);
      expect(sha(await readFile(r.path))).toBe(sha(fd));
    });

    it('404 fails at once, 500 after retries, a silent server within the timeout', async () => {
      const cache = await tempDir();
      const before = server.seen.length;
      await expect(
        fetchFirmware({
          source: server.url('/missing.fd'),
          sha256: sha(fd),
          cacheDir: cache,
          retryDelayMs: 10,
        }),
      ).rejects.toThrow(`Could not download '${server.url('/missing.fd')}': HTTP 404 Not Found`);
      expect(server.seen.slice(before).length).toBe(1); // not retried
      await expect(
        fetchFirmware({
          source: server.url('/error500'),
          sha256: sha(fd),
          cacheDir: cache,
          retries: 2,
          retryDelayMs: 10,
        }),
      ).rejects.toThrow(/: server error: HTTP 500 \(3 attempts\)$/);
      const t0 = Date.now();
      const err = await fetchFirmware({
        source: server.url('/silent'),
        sha256: sha(fd),
        cacheDir: cache,
        timeoutMs: 1000,
        retries: 1,
        retryDelayMs: 10,
      }).catch((e: Error) => e);
      expect((err as Error).message).toBe(
        `Could not download '${server.url('/silent')}': no response from the server within 1 s (2 attempts)`,
      );
      expect(Date.now() - t0).toBeLessThan(30_000); // bounded: two 1 s timeouts, not the default 30 s
      expect((await cacheState(cache)).store).toEqual([]);
    });

    it('an archive without the member names what it has', async () => {
      const cache = await tempDir();
      await expect(
        fetchFirmware({
          source: server.url('/edk2.tar.gz'),
          sha256: sha(tgz),
          member: 'QEMU_EFI.fd',
          arch: 'aarch64',
          cacheDir: cache,
        }),
      ).rejects.toThrow(
        "The archive has no member 'QEMU_EFI.fd'; its files are: edk2/aarch64/QEMU_EFI.fd, edk2/README",
      );
      expect((await cacheState(cache)).store).toEqual([]);
    });

    it('entries with ../ or absolute paths reject the archive; nothing is written outside the cache', async () => {
      const root = await tempDir();
      const cache = join(root, 'a', 'b', 'cache');
      for (const [path, re] of [
        ['/evil-dotdot.tar', /Archive entry '..\/..\/evil.fd' escapes the archive/],
        ['/evil-abs.tar', /Archive entry '\/tmp\/vmforge-evil-abs.fd' has an absolute path/],
        ['/evil-dotdot.zip', /Archive entry '..\/evil.fd' escapes the archive/],
        ['/evil-abs.zip', /Archive entry '\/tmp\/vmforge-evil-abs-zip.fd' has an absolute path/],
      ] as const) {
        const body = await (await fetch(server.url(path))).arrayBuffer();
        await expect(
          fetchFirmware({
            source: server.url(path),
            sha256: sha(new Uint8Array(body)),
            member: 'ok/QEMU_EFI.fd',
            arch: 'aarch64',
            cacheDir: cache,
          }),
        ).rejects.toThrow(re);
      }
      expect(existsSync('/tmp/vmforge-evil-abs.fd')).toBe(false);
      expect(existsSync('/tmp/vmforge-evil-abs-zip.fd')).toBe(false);
      for (const p of [
        join(root, 'evil.fd'),
        join(root, 'a', 'evil.fd'),
        join(root, 'a', 'b', 'evil.fd'),
        join(cache, 'evil.fd'),
      ])
        expect(existsSync(p)).toBe(false);
      expect(await cacheState(cache)).toEqual({ store: [], descriptors: [], downloads: [] });
    });

    it('refuses a symlink member and a download that is not firmware', async () => {
      const cache = await tempDir();
      const link = Buffer.from(await (await fetch(server.url('/link.tar'))).arrayBuffer());
      await expect(
        fetchFirmware({
          source: server.url('/link.tar'),
          sha256: sha(link),
          member: 'QEMU_EFI.fd',
          arch: 'aarch64',
          cacheDir: cache,
        }),
      ).rejects.toThrow(/Archive member 'QEMU_EFI.fd' is a symlink, not a regular file/);
      const junk = Buffer.alloc(65536, 0x41);
      await expect(
        fetchFirmware({
          source: server.url('/notfw.bin'),
          sha256: sha(junk),
          arch: 'aarch64',
          cacheDir: cache,
        }),
      ).rejects.toThrow(
        /'notfw.bin' is not UEFI firmware code: no firmware volume header found; nothing was stored/,
      );
      expect((await cacheState(cache)).store).toEqual([]);
    });

    it('goes through HTTP_PROXY, and around it for NO_PROXY hosts', async () => {
      const cache = await tempDir();
      const connects: string[] = [];
      // A forward proxy: absolute-form requests for http://, CONNECT tunnels otherwise.
      const proxy: NetServer = createNetServer((client) => {
        client.once('data', (head) => {
          const text = head.toString('latin1');
          const tunnel = /^CONNECT ([^ ]+):(\d+) HTTP/.exec(text);
          const forward = /^(\w+) http:\/\/([^/:]+):(\d+)(\/\S*) (HTTP\/1\.1\r\n[\s\S]*)$/.exec(
            text,
          );
          if (!tunnel && !forward) {
            client.destroy();
            return;
          }
          const [host, port] = tunnel ? [tunnel[1]!, tunnel[2]!] : [forward![2]!, forward![3]!];
          connects.push(`${host}:${port}`);
          const upstream = connect(Number(port), host, () => {
            if (tunnel) client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
            else upstream.write(`${forward![1]} ${forward![4]} ${forward![5]}`);
            upstream.pipe(client).pipe(upstream);
          });
          upstream.on('error', () => client.destroy());
        });
      });
      await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
      try {
        const proxyUrl = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
        await fetchFirmware({
          source: server.url('/QEMU_EFI.fd'),
          sha256: sha(fd),
          arch: 'aarch64',
          cacheDir: cache,
          env: { HTTP_PROXY: proxyUrl },
        });
        expect(connects).toHaveLength(1);
        await fetchFirmware({
          source: server.url('/QEMU_EFI.fd'),
          sha256: sha(fd),
          arch: 'aarch64',
          cacheDir: cache,
          env: { HTTP_PROXY: proxyUrl, NO_PROXY: '127.0.0.1' },
        });
        expect(connects).toHaveLength(1);
      } finally {
        await new Promise((r) => proxy.close(r));
      }
    });

    it('rejects bad arguments before any I/O', async () => {
      await expect(fetchFirmware({ source: server.url('/QEMU_EFI.fd') })).rejects.toThrow(
        /--sha256 is required/,
      );
      await expect(
        fetchFirmware({ source: server.url('/QEMU_EFI.fd'), sha256: 'abc' }),
      ).rejects.toThrow(/Invalid SHA-256 'abc'/);
      await expect(fetchFirmware({ source: 'ftp://x/y', sha256: sha(fd) })).rejects.toThrow(
        /neither an http\(s\) URL nor a known firmware name/,
      );
    });
  },
);
