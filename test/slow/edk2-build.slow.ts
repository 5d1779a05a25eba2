// The real thing: `vmforge firmware build` compiles ArmVirtQemu from the edk2 source Debian
// ships (`apt-get source edk2`, with its quirks: the shell needs SECURE_BOOT_ENABLE=TRUE, the
// GCC LTO stub ships as liblto-aarch64.s) with Debian's aarch64 cross compiler, registers it,
// and the result — prepared with `vmforge firmware prepare` — boots QEMU to the UEFI shell.
// Run with `npm run test:slow` (test/slow/setup-edk2-build.sh installs what it needs).
// VMFORGE_EDK2_SOURCE=DIR builds an existing tree instead of a fresh `apt-get source`.

import { availableParallelism } from 'node:os';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { run, runBin } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { bootToShell } from '../interop/edk2-support.js';

it('builds ArmVirtQemu from Debian’s edk2 source and boots it to the UEFI shell', async () => {
  const work = await tempDir('vmforge-edk2-build-');
  let source = process.env['VMFORGE_EDK2_SOURCE'];
  if (!source) {
    const got = await run('apt-get', ['source', '-q', 'edk2'], { cwd: work, timeoutMs: 600_000 });
    expect(got.code, got.stderr).toBe(0);
    const dir = (await readdir(work)).find((n) => /^edk2-\d/.test(n));
    expect(dir).toBeDefined();
    source = join(work, dir!);
  }
  const cache = join(work, 'cache');
  const t0 = Date.now();
  const built = await runBin(
    'vmforge',
    [
      'firmware',
      'build',
      '--arch',
      'aarch64',
      '--source',
      source,
      '--release',
      '--jobs',
      String(availableParallelism()),
      '--cache-dir',
      cache,
      '--json',
    ],
    { timeoutMs: 3_000_000 },
  );
  const seconds = Math.round((Date.now() - t0) / 1000);
  expect(built.stderr).toBe('');
  expect(built.code).toBe(0);
  const r = JSON.parse(built.stdout) as {
    path: string;
    vars: string;
    descriptor: string;
    notes: string[];
    toolchain: string;
    log: string;
  };
  process.stdout.write(
    `edk2 ArmVirtQemu build: ${seconds} s (toolchain ${r.toolchain}, log ${r.log})\n`,
  );
  expect(r.notes.join('\n')).toMatch(/SECURE_BOOT_ENABLE=TRUE/); // Debian's shell quirk handled
  expect((await stat(r.path)).size).toBeGreaterThan(1024 * 1024);

  const out = join(work, 'vm');
  const prep = await runBin('vmforge', [
    'firmware',
    'prepare',
    '--arch',
    'aarch64',
    '--code',
    r.path,
    '--vars-template',
    r.vars,
    '--out',
    out,
    '--json',
  ]);
  expect(prep.code, prep.stderr).toBe(0);
  const p = JSON.parse(prep.stdout) as { 'qemu-args': string[] };
  const boot = await bootToShell('aarch64', p['qemu-args'], { timeoutMs: 180_000 });
  expect(boot.serial).toContain('UEFI Interactive Shell');
  expect(boot.reachedShell).toBe(true);
});
