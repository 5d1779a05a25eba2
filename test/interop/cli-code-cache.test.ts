// vmforge-img runs its bundle with a V8 code cache made after a successful run
// (bin/code-cache.cjs). What must hold: the cache never changes what a command does, a damaged
// or foreign cache is refused (and replaced), only private directories are used, and a cache is
// only ever used for the exact bundle it was made from.
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binPath, run } from '../support/run.js';

const loader = fileURLToPath(new URL('../../bin/code-cache.cjs', import.meta.url));
const imgBundle = fileURLToPath(new URL('../../dist/bundle/img.cjs', import.meta.url));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmforge-code-cache-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** vmforge-img with its cache under `cacheRoot` (Node's NODE_COMPILE_CACHE, + /vmforge). */
function img(args: string[], cacheRoot: string, extraEnv: NodeJS.ProcessEnv = {}) {
  return run(process.execPath, [binPath('vmforge-img'), ...args], {
    env: {
      ...process.env,
      LC_ALL: 'C',
      NODE_COMPILE_CACHE: cacheRoot,
      NODE_DEBUG: 'vmforge:codecache',
      NODE_DISABLE_COMPILE_CACHE: undefined,
      VMFORGE_DEBUG: undefined,
      ...extraEnv,
    },
  });
}

function cacheEvents(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('vmforge:codecache '))
    .map((l) => l.slice('vmforge:codecache '.length).split(':')[0]!);
}

function makeImage(name: string): string {
  const file = join(dir, name);
  writeFileSync(file, Buffer.alloc(1024 * 1024, 0x5a));
  return file;
}

describe('the built img bundle', () => {
  it('names its content in its first line and opens its code in strict mode', () => {
    const text = readFileSync(imgBundle, 'utf8');
    const nl = text.indexOf('\n');
    const m = /^\/\/ vmforge-bundle ([0-9a-f]{64})$/.exec(text.slice(0, nl));
    expect(m, 'first line').not.toBeNull();
    const rest = text.slice(nl + 1);
    expect(createHash('sha256').update(rest).digest('hex')).toBe(m![1]);
    // A prologue before esbuild's own "use strict" would turn the directive into a no-op.
    expect(rest.startsWith('"use strict";\n')).toBe(true);
  });
});

describe('vmforge-img code cache', () => {
  it('is written by the first successful run, accepted by the next, and changes no output', async () => {
    const root = join(dir, 'c1');
    const image = makeImage('a.raw');
    const first = await img(['info', '--output=json', image], root);
    expect(first.code).toBe(0);
    expect(cacheEvents(first.stderr)).toEqual(['none yet', 'written']);
    const second = await img(['info', '--output=json', image], root);
    expect(cacheEvents(second.stderr)).toEqual(['accepted']);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect(JSON.parse(second.stdout).format).toBe('raw');

    const cacheDir = join(root, 'vmforge');
    expect(statSync(cacheDir).mode & 0o777).toBe(0o700);
    const files = readdirSync(cacheDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(
      new RegExp(`^img-[0-9a-f]{16}-info-${process.version}-${process.arch}\\.v8$`),
    );
    expect(statSync(join(cacheDir, files[0]!)).mode & 0o777).toBe(0o600);

    // Another command has its own cache.
    const conv = await img(['convert', '-O', 'qcow2', image, join(dir, 'a.qcow2')], root);
    expect(conv.code).toBe(0);
    expect(cacheEvents(conv.stderr)).toEqual(['none yet', 'written']);
    expect(readdirSync(cacheDir).sort()).toEqual(
      [files[0]!, files[0]!.replace('-info-', '-convert-')].sort(),
    );
  });

  it('is shared by `vmforge img`, which runs the same bundle', async () => {
    const root = join(dir, 'c8');
    const image = makeImage('e.raw');
    const a = await img(['info', '--output=json', image], root);
    expect(cacheEvents(a.stderr)).toEqual(['none yet', 'written']);
    const b = await run(
      process.execPath,
      [binPath('vmforge'), 'img', 'info', '--output=json', image],
      {
        env: {
          ...process.env,
          LC_ALL: 'C',
          NODE_COMPILE_CACHE: root,
          NODE_DEBUG: 'vmforge:codecache',
        },
      },
    );
    expect(b.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    expect(cacheEvents(b.stderr)).toEqual(['accepted']);
  });

  it('is not written by a failing run', async () => {
    const root = join(dir, 'c2');
    const r = await img(['info', join(dir, 'no-such-file')], root);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Could not open');
    expect(cacheEvents(r.stderr)).toEqual(['none yet']);
    expect(readdirSync(join(root, 'vmforge'))).toEqual([]);
  });

  it('refuses a damaged cache, runs normally, and writes a good one', async () => {
    const root = join(dir, 'c3');
    const image = makeImage('b.raw');
    const good = await img(['info', image], root);
    expect(good.code).toBe(0);
    const [file] = readdirSync(join(root, 'vmforge'));
    const path = join(root, 'vmforge', file!);
    const size = statSync(path).size;
    for (const damage of [
      Buffer.alloc(size, 0xa5), // garbage of the right size
      readFileSync(path).subarray(0, size >> 1), // cut short
      Buffer.alloc(0), // empty
    ]) {
      writeFileSync(path, damage);
      const r = await img(['info', image], root);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(good.stdout);
      expect(cacheEvents(r.stderr)).toEqual(['rejected', 'written']);
      expect(readFileSync(path).equals(damage)).toBe(false);
      expect(cacheEvents((await img(['info', image], root)).stderr)).toEqual(['accepted']);
    }
  });

  it('uses no directory that is not private to the user', async () => {
    const image = makeImage('c.raw');
    const open = join(dir, 'c4');
    mkdirSync(join(open, 'vmforge'), { recursive: true });
    chmodSync(join(open, 'vmforge'), 0o777);
    const r1 = await img(['info', image], open);
    expect(r1.code).toBe(0);
    expect(cacheEvents(r1.stderr)).toEqual(['not used (no private cache directory, or disabled)']);
    expect(readdirSync(join(open, 'vmforge'))).toEqual([]);

    // A symlink in its place (pointing at a directory that would otherwise qualify).
    const linked = join(dir, 'c5');
    mkdirSync(linked);
    mkdirSync(join(dir, 'c5-target'), { mode: 0o700 });
    symlinkSync(join(dir, 'c5-target'), join(linked, 'vmforge'));
    const r2 = await img(['info', image], linked);
    expect(r2.code).toBe(0);
    expect(cacheEvents(r2.stderr)[0]).toMatch(/^not used/);
    expect(readdirSync(join(dir, 'c5-target'))).toEqual([]);

    if (process.getuid?.() === 0) {
      // Owned by someone else (only root can make one to test with).
      const foreign = join(dir, 'c6');
      mkdirSync(join(foreign, 'vmforge'), { recursive: true, mode: 0o700 });
      const { chownSync } = await import('node:fs');
      chownSync(join(foreign, 'vmforge'), 65534, 65534);
      const r3 = await img(['info', image], foreign);
      expect(r3.code).toBe(0);
      expect(cacheEvents(r3.stderr)[0]).toMatch(/^not used/);
      expect(readdirSync(join(foreign, 'vmforge'))).toEqual([]);
    }
  });

  it('is off with NODE_DISABLE_COMPILE_CACHE=1', async () => {
    const root = join(dir, 'c7');
    const r = await img(['info', makeImage('d.raw')], root, { NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(r.code).toBe(0);
    expect(cacheEvents(r.stderr)[0]).toMatch(/^not used/);
    expect(existsSync(root)).toBe(false);
  });
});

describe('loadBundle', () => {
  /** A one-line bundle exporting `value`, with the id the build would give it (or `id`). */
  function fakeBundle(name: string, value: string, id?: string): string {
    const body = `"use strict";\nmodule.exports.value = () => ${JSON.stringify(value)};\n`;
    const sha = id ?? createHash('sha256').update(body).digest('hex');
    const file = join(dir, name);
    writeFileSync(file, `// vmforge-bundle ${sha}\n${body}`);
    return file;
  }

  /** Load `bundle` in a fresh node with the cache under `root`; its value, and the cache log. */
  async function load(bundle: string, root: string) {
    const r = await run(
      process.execPath,
      [
        '-e',
        `const { loadBundle } = require(${JSON.stringify(loader)});
         process.stdout.write(loadBundle(${JSON.stringify(bundle)}, 'fake', 'cmd').value());`,
      ],
      {
        env: {
          ...process.env,
          NODE_COMPILE_CACHE: root,
          NODE_DEBUG: 'vmforge:codecache',
          NODE_DISABLE_COMPILE_CACHE: undefined,
          VMFORGE_DEBUG: undefined,
        },
      },
    );
    expect(r.code, r.stderr).toBe(0);
    return { value: r.stdout, events: cacheEvents(r.stderr) };
  }

  it('never runs a cache made from other source of the same length', async () => {
    const root = join(dir, 'l1');
    const a = fakeBundle('a.cjs', 'AAAA');
    expect(await load(a, root)).toEqual({ value: 'AAAA', events: ['none yet', 'written'] });
    expect(await load(a, root)).toEqual({ value: 'AAAA', events: ['accepted'] });
    // Same length, other content: the build gives it another id, so another cache file. V8
    // alone would take the old cache (it compares lengths) and run AAAA's code.
    const b = fakeBundle('a.cjs', 'BBBB');
    expect(await load(b, root)).toEqual({ value: 'BBBB', events: ['none yet', 'written'] });
    // The old build's cache stays (another install may still use it) until it is a week old.
    expect(readdirSync(join(root, 'vmforge'))).toHaveLength(2);
  });

  it('removes other builds’ caches unused for a week and dead temporary files, nothing else', async () => {
    const root = join(dir, 'l2');
    const cdir = join(root, 'vmforge');
    mkdirSync(cdir, { recursive: true, mode: 0o700 });
    const old = Date.now() / 1000 - 8 * 24 * 3600;
    const files = {
      otherProgram: 'other-0123456789abcdef-cmd-v0-x64.v8', // not ours: never touched
      oldBuild: 'fake-0123456789abcdef-cmd-v0-x64.v8', // ours, a week old: removed
      recentBuild: 'fake-fedcba9876543210-cmd-v0-x64.v8', // ours, recent: another install's
      deadTmp: 'fake-fedcba9876543210-cmd-v0-x64.v8.123.tmp', // a killed run's, old: removed
    };
    for (const f of Object.values(files)) writeFileSync(join(cdir, f), 'x');
    for (const f of [files.otherProgram, files.oldBuild, files.deadTmp])
      utimesSync(join(cdir, f), old, old);
    await load(fakeBundle('c.cjs', 'C'), root);
    const left = readdirSync(cdir);
    expect(left).toContain(files.otherProgram);
    expect(left).toContain(files.recentBuild);
    expect(left).not.toContain(files.oldBuild);
    expect(left).not.toContain(files.deadTmp);
    expect(left).toHaveLength(3); // + the new cache
  });

  it('does not read a cache file that others can write, or a symlink', async () => {
    const root = join(dir, 'l4');
    const bundle = fakeBundle('d.cjs', 'D');
    expect((await load(bundle, root)).events).toEqual(['none yet', 'written']);
    const [file] = readdirSync(join(root, 'vmforge'));
    const path = join(root, 'vmforge', file!);
    chmodSync(path, 0o666);
    expect((await load(bundle, root)).events).toEqual(['none yet', 'written']);
    expect(statSync(path).mode & 0o777).toBe(0o600); // replaced by a private one
    renameSync(path, `${path}.real`);
    symlinkSync(`${path}.real`, path);
    expect((await load(bundle, root)).events).toEqual(['none yet', 'written']);
    expect(lstatSync(path).isSymbolicLink()).toBe(false);
  });

  it('loads a bundle without an id, with no cache', async () => {
    const file = join(dir, 'noid.cjs');
    writeFileSync(file, '"use strict";\nmodule.exports.value = () => "N";\n');
    const root = join(dir, 'l3');
    expect(await load(file, root)).toEqual({
      value: 'N',
      events: ['not used (no bundle id)'],
    });
  });
});
