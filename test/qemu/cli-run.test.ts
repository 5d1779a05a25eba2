// `vmforge run` / `vmforge qmp` argument handling in-process: invalid specs fail before QEMU is
// ever started, --dry-run prints one argument per line, bad options are usage errors.
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { captureIO } from '../../src/cli/io.js';
import { runQmp, runRun } from '../../src/cli/run/index.js';
import { tempDir } from '../support/tmp.js';
import { FAKE_RUN_DIR, fakeProviders } from './support.js';

const FAKE = fileURLToPath(new URL('../fixtures/qemu/fake-qemu.mjs', import.meta.url));
const hooks = {
  launch: {
    providers: fakeProviders(),
    runDir: FAKE_RUN_DIR,
    accel: { accel: 'tcg' as const, note: undefined },
  },
};

async function run(args: string[], cwd: string) {
  const cap = captureIO({}, cwd);
  const code = await runRun(args, cap.io, hooks);
  return { code, out: cap.out, err: cap.err };
}

/** A spec whose emulator records that it was started. */
async function recordingSpec(
  dir: string,
  extra: string,
): Promise<{ spec: string; marker: string }> {
  const wrapper = join(dir, 'qemu-system-x86_64');
  const marker = join(dir, 'started');
  await writeFile(
    wrapper,
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(FAKE)} record ${JSON.stringify(marker)}\n`,
    { mode: 0o755 },
  );
  const spec = join(dir, 'vm.yaml');
  await writeFile(spec, `arch: x86_64\nemulator: ${wrapper}\n${extra}`);
  return { spec, marker };
}

describe('vmforge run', () => {
  it('an invalid spec exits 1 with the field named, and QEMU is never started', async () => {
    const dir = await tempDir();
    const { spec, marker } = await recordingSpec(
      dir,
      'smp: { cpus: 3, sockets: 2, cores: 2, threads: 1 }\n',
    );
    const r = await run([spec, '--wait-for', 'x', '--timeout', '5'], dir);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      'vmforge run: spec field `smp`: the CPU topology sockets (2) × dies (1) × cores (2) × threads (1) = 4 CPUs must equal maxcpus (3)\n',
    );
    await expect(stat(marker)).rejects.toThrow();
  });

  it('a --set that breaks the spec is reported the same way', async () => {
    const dir = await tempDir();
    const { spec, marker } = await recordingSpec(dir, '');
    const r = await run(
      [spec, '--set', 'disks[0].interface=sata', '--set', 'disks[0].path=a.img'],
      dir,
    );
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      'spec field `disks[0].interface`: expected one of virtio-blk, virtio-scsi, nvme, ide; got "sata" (string)',
    );
    await expect(stat(marker)).rejects.toThrow();
  });

  it('--dry-run prints the argv one argument per line and starts nothing', async () => {
    const dir = await tempDir();
    const { spec, marker } = await recordingSpec(dir, 'name: dry\nmemory: 2G\n');
    const r = await run(
      [spec, '--dry-run', '--set', 'smp=2', '--serial-log', 'out/serial.txt'],
      dir,
    );
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split('\n');
    expect(lines[0]).toBe(join(dir, 'qemu-system-x86_64'));
    expect(lines.slice(1, 3)).toEqual(['-name', 'guest=dry']);
    expect(lines).toContain('size=2048M');
    expect(lines).toContain('cpus=2,maxcpus=2,sockets=1,dies=1,cores=2,threads=1');
    expect(lines).toContain(`file,id=serial0,path=${join(dir, 'out/serial.txt')}`);
    await expect(stat(marker)).rejects.toThrow();
  });

  it('rejects a bad regex and a bad timeout before reading the spec', async () => {
    const dir = await tempDir();
    expect(await run(['missing.yaml', '--wait-for', '('], dir)).toMatchObject({
      code: 1,
      err: expect.stringMatching(/--wait-for: invalid regular expression/) as unknown,
    });
    expect(await run(['missing.yaml', '--timeout', '-3'], dir)).toMatchObject({
      code: 1,
      err: expect.stringMatching(
        /--timeout expects a positive number of seconds, got '-3'/,
      ) as unknown,
    });
  });

  it('a missing spec file is named', async () => {
    const dir = await tempDir();
    const r = await run(['nope.yaml'], dir);
    expect(r).toEqual({
      code: 1,
      out: '',
      err: `vmforge run: Could not read spec '${join(dir, 'nope.yaml')}': No such file or directory\n`,
    });
  });

  it('a spec file with broken YAML says where', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'vm.yaml'), 'arch: x86_64\nmemory: [1G\n');
    const r = await run(['vm.yaml'], dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^vmforge run: .*vm.yaml: invalid YAML: .*line 3/);
    expect(await readFile(join(dir, 'vm.yaml'), 'utf8')).toContain('memory');
  });
});

describe('vmforge qmp', () => {
  it('rejects arguments that are not a JSON object', async () => {
    const cap = captureIO();
    expect(await runQmp(['/tmp/x.sock', 'device_del', '[1]'], cap.io)).toBe(1);
    expect(cap.err).toContain('JSON-ARGS must be a JSON object');
  });

  it('says when nothing listens on the socket', async () => {
    const cap = captureIO();
    const dir = await tempDir();
    expect(await runQmp([join(dir, 'none.sock'), 'query-status'], cap.io)).toBe(1);
    expect(cap.err).toMatch(/^vmforge qmp: Could not connect to QMP at .*none.sock/);
  });
});
