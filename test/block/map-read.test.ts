// native/mapread.c: mapRead() maps a file range on the thread pool and marks its all-zero
// 512-byte sectors; unmap() gives it back. What must hold: the view holds exactly the file's
// bytes (also at offsets that are not page-aligned), the zero map is exact per sector (a single
// non-zero byte anywhere makes a sector data; a partial last sector counts its own bytes), ranges
// that cannot be mapped answer undefined, an unmapped view is empty to JavaScript, and a SIGBUS
// from a mapping whose file shrank ends the process with a message instead of a bare signal.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nativeFileOps } from '../../src/block/native.js';
import { pseudoRandom } from '../support/imgops-matrix.js';
import { tempDir } from '../support/tmp.js';

const SECTOR = 512;
const native = nativeFileOps();
const available = Boolean(native?.mapRead && native.unmap);

/** 64 sectors plus 300 bytes: data, zero, data with one non-zero byte in its middle, ... */
function patterned(): { bytes: Buffer; zero: number[] } {
  const sectors = 64;
  const bytes = Buffer.alloc(sectors * SECTOR + 300);
  const zero: number[] = [];
  const random = pseudoRandom(7, bytes.length);
  for (let s = 0; s < sectors; s++) {
    const kind = s % 4;
    if (kind === 0) random.copy(bytes, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
    if (kind === 2) bytes[s * SECTOR + 200 + s] = 1; // neither the first nor the last word
    zero.push(kind === 1 || kind === 3 ? 1 : 0);
  }
  bytes[sectors * SECTOR + 299] = 9; // the partial last sector is data, by its last byte
  zero.push(0);
  return { bytes, zero };
}

describe('mapRead / unmap (native/mapread.c)', () => {
  it('the native helper provides them (CI builds it)', () => {
    if (process.env['VMFORGE_REQUIRE_TOOLS'] !== '1' && !available) return;
    expect(available).toBe(true);
  });

  it.runIf(available)('maps exactly the file bytes and marks zero sectors exactly', async () => {
    const dir = await tempDir();
    const path = join(dir, 'src');
    const { bytes, zero } = patterned();
    // Put the pattern 3 sectors into the file so that the mapping is not page-aligned.
    writeFileSync(path, Buffer.concat([pseudoRandom(1, 3 * SECTOR), bytes]));
    const fd = openSync(path, 'r');
    try {
      const zeroMap = new Uint8Array(128).fill(7);
      const view = await native!.mapRead!(fd, 3 * SECTOR, bytes.length, zeroMap);
      expect(view).toBeInstanceOf(Uint8Array);
      expect(view!.length).toBe(bytes.length);
      expect(Array.from(zeroMap.subarray(0, zero.length))).toEqual(zero);
      expect(zeroMap[zero.length]).toBe(7); // nothing written past the range's sectors
      // The view is for write(), as convert uses it.
      const out = join(dir, 'out');
      const ofd = openSync(out, 'w');
      writeSync(ofd, view!, 0, view!.length, 0);
      closeSync(ofd);
      expect(readFileSync(out).equals(bytes)).toBe(true);
      native!.unmap!(view!);
      expect(view!.length).toBe(0); // detached: JavaScript cannot reach the unmapped pages
      native!.unmap!(view!); // twice is harmless
      // Without a zero map: the bytes only.
      const plain = await native!.mapRead!(fd, 0, 4096, null);
      expect(plain!.length).toBe(4096);
      native!.unmap!(plain!);
    } finally {
      closeSync(fd);
    }
  });

  it.runIf(available)('answers undefined for what it cannot map', async () => {
    const dir = await tempDir();
    const path = join(dir, 'src');
    writeFileSync(path, pseudoRandom(2, 8192));
    const fd = openSync(path, 'r');
    try {
      const zeroMap = new Uint8Array(128);
      expect(await native!.mapRead!(fd, 4096, 8192, zeroMap)).toBeUndefined(); // past EOF
      expect(await native!.mapRead!(fd, 8192, 512, zeroMap)).toBeUndefined();
      expect(() => native!.mapRead!(fd, 0, 8192, new Uint8Array(8))).toThrow(/zero map/);
    } finally {
      closeSync(fd);
    }
    // Not a regular file.
    const devNull = openSync('/dev/zero', 'r');
    try {
      expect(await native!.mapRead!(devNull, 0, 4096, null)).toBeUndefined();
    } finally {
      closeSync(devNull);
    }
  });

  it.runIf(available)(
    'a file that shrinks during the zero scan is answered undefined',
    async () => {
      // The scan runs on a pool thread under a SIGBUS guard. A child process maps 256 MiB of
      // zeros, waits until the scan has begun (its zero map starts filling), then truncates the
      // file: the scan faults on the next page, and the guard must turn that into undefined.
      const dir = await tempDir();
      const path = join(dir, 'src');
      const addon = join(process.cwd(), 'build/Release/vmforge_native.node');
      const script = `
      const { openSync, ftruncateSync } = require('node:fs');
      const native = require(${JSON.stringify(addon)});
      const SIZE = 256 << 20;
      const fd = openSync(${JSON.stringify(path)}, 'w+');
      ftruncateSync(fd, SIZE);
      const zeroMap = new Uint8Array(SIZE / 512).fill(7);
      native.mapRead(fd, 0, SIZE, zeroMap).then((view) => {
        const scanned = zeroMap.indexOf(7);
        process.stdout.write(JSON.stringify({ mapped: view !== undefined, scanned }));
      });
      const t0 = Date.now();
      while (zeroMap[0] === 7 && Date.now() - t0 < 20000);
      ftruncateSync(fd, 0);`;
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
      expect(r.signal).toBeNull();
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as { mapped: boolean; scanned: number };
      expect(out.mapped).toBe(false);
      expect(out.scanned).toBeGreaterThan(0); // the scan had begun: the guard stopped it
    },
  );

  it.runIf(available)(
    'unmap() leaves the munmap to the next mapRead, and never lets more than 32 wait',
    async () => {
      const dir = await tempDir();
      const path = join(dir, 'retired-src');
      writeFileSync(path, pseudoRandom(3, 64 * 4096));
      /** Mappings of `path` in this process (/proc/self/maps names the file). */
      const mapped = () =>
        readFileSync('/proc/self/maps', 'utf8')
          .split('\n')
          .filter((l) => l.endsWith(path)).length;
      const fd = openSync(path, 'r');
      try {
        const views: Uint8Array[] = [];
        for (let i = 0; i < 40; i++)
          views.push((await native!.mapRead!(fd, i * 4096, 4096, null))!);
        expect(mapped()).toBe(40);
        for (const v of views) native!.unmap!(v);
        // 32 wait for the pool; the 8 beyond that were unmapped on the spot.
        expect(mapped()).toBe(32);
        // The next mapRead unmaps them on the pool before mapping its own range.
        const next = await native!.mapRead!(fd, 0, 4096, null);
        expect(mapped()).toBe(1);
        native!.unmap!(next!);
        await native!.mapRead!(fd, 0, 4096, null).then((v) => native!.unmap!(v!));
        expect(mapped()).toBe(1); // the last one waits: for the next mapRead, or ...
        native!.flushUnmapped!(); // ... this, which unmaps it on the pool
        for (let i = 0; i < 100 && mapped() > 0; i++) await new Promise((r) => setTimeout(r, 10));
        expect(mapped()).toBe(0);
      } finally {
        closeSync(fd);
      }
    },
  );

  it.runIf(available)('worker threads map and unmap concurrently', async () => {
    // Every worker has its own Node-API environment; their mapping lists must not be shared.
    const dir = await tempDir();
    const path = join(dir, 'src');
    writeFileSync(path, pseudoRandom(4, 1 << 20));
    const addon = join(process.cwd(), 'build/Release/vmforge_native.node');
    const script = `
      const { Worker, isMainThread, parentPort } = require('node:worker_threads');
      if (isMainThread) {
        let done = 0;
        for (let i = 0; i < 2; i++) {
          new Worker(__filename).on('message', (m) => {
            if (++done === 2) process.stdout.write('ok');
          });
        }
      } else {
        const native = require(${JSON.stringify(addon)});
        const fd = require('node:fs').openSync(${JSON.stringify(path)}, 'r');
        (async () => {
          for (let it = 0; it < 1500; it++) {
            const views = await Promise.all(
              Array.from({ length: 8 }, (_, k) => native.mapRead(fd, k * 4096, 4096, null)),
            );
            for (const v of views) native.unmap(v);
            if (it % 256 === 0) await new Promise((r) => setImmediate(r)); // finalizers run
          }
          parentPort.postMessage('done');
        })();
      }`;
    const file = join(dir, 'workers.cjs');
    writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, MALLOC_PERTURB_: '165' },
    });
    expect(r.signal).toBeNull();
    expect(r.stdout).toBe('ok');
  });

  it.runIf(available)('a mapping whose file shrank ends the process with a message', async () => {
    const dir = await tempDir();
    const path = join(dir, 'src');
    writeFileSync(path, pseudoRandom(3, 1 << 20));
    const addon = join(process.cwd(), 'build/Release/vmforge_native.node');
    const script = `
      const { openSync, ftruncateSync } = require('node:fs');
      const native = require(${JSON.stringify(addon)});
      const fd = openSync(${JSON.stringify(path)}, 'r+');
      native.mapRead(fd, 0, 1 << 20, null).then((view) => {
        ftruncateSync(fd, 0);
        process.stdout.write('mapped\\n');
        process.stdout.write(String(view[4096]));
      });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout).toBe('mapped\n');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('a source file shrank while it was being copied');
  });
});
