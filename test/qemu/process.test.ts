// QemuProcess lifecycle against fake-qemu fixtures: start failures, stderr tail, the stop ladder
// (SIGTERM, then SIGKILL when ignored), destroy. The QMP steps of stop() (system_powerdown,
// quit) run against real QEMU in test/interop/qemu-lifecycle.test.ts.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { QemuProcess, QemuStartError, QmpClient } from '../../src/qemu/index.js';
import { tempDir } from '../support/tmp.js';

const FAKE = fileURLToPath(new URL('../fixtures/qemu/fake-qemu.mjs', import.meta.url));
const start = (mode: string) => QemuProcess.start({ binary: process.execPath, args: [FAKE, mode] });

describe('QemuProcess', () => {
  it('names the missing emulator and the Debian package that ships it', async () => {
    const err = await QemuProcess.start({
      binary: '/nonexistent/qemu-system-aarch64',
      args: [],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuStartError);
    expect((err as Error).message).toMatch(
      /^Could not start \/nonexistent\/qemu-system-aarch64: .*ENOENT.*install the Debian package qemu-system-arm\)$/,
    );
  });

  it('keeps the stderr tail of a failed QEMU', async () => {
    const p = await start('fail');
    expect(await p.wait()).toEqual({ code: 1, signal: null });
    expect(p.stderrTail()).toContain('unsupported machine type');
    expect(p.exitStatus).toEqual({ code: 1, signal: null });
  });

  it('stops with SIGTERM when there is no QMP', async () => {
    const p = await start('die-on-term');
    const r = await p.stop({ termTimeoutMs: 5000 });
    expect(r).toEqual({ step: 'SIGTERM', exit: { code: null, signal: 'SIGTERM' } });
  });

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const p = await start('ignore-term');
    await new Promise((r) => setTimeout(r, 200)); // let it install its handler
    const r = await p.stop({ termTimeoutMs: 200 });
    expect(r).toEqual({ step: 'SIGKILL', exit: { code: null, signal: 'SIGKILL' } });
    expect(p.stderrTail()).toContain('ignoring SIGTERM');
  });

  it('destroy kills at once and is idempotent; stop after exit reports it', async () => {
    const p = await start('ignore-term');
    expect(await p.destroy()).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await p.destroy()).toEqual({ code: null, signal: 'SIGKILL' });
    expect((await p.stop()).step).toBe('exited');
  });

  it('an aborted signal destroys the process', async () => {
    const ac = new AbortController();
    const p = await QemuProcess.start({
      binary: process.execPath,
      args: [FAKE, 'ignore-term'],
      signal: ac.signal,
    });
    ac.abort();
    expect((await p.wait()).signal).toBe('SIGKILL');
  });

  async function withQmp(mode: string) {
    const sock = join(await tempDir(), 'qmp.sock');
    const p = await QemuProcess.start({ binary: process.execPath, args: [FAKE, mode, sock] });
    const qmp = await QmpClient.connect({ path: sock });
    return { p, qmp };
  }

  it('stop ends at system_powerdown when the guest powers off', async () => {
    const { p, qmp } = await withQmp('qmp-powerdown');
    expect(await p.stop({ qmp, powerdownTimeoutMs: 5000 })).toEqual({
      step: 'powerdown',
      exit: { code: 0, signal: null },
    });
    qmp.destroy();
  });

  it('stop moves on to quit when the guest ignores the power button', async () => {
    const { p, qmp } = await withQmp('qmp-deaf-guest');
    expect(await p.stop({ qmp, powerdownTimeoutMs: 200 })).toEqual({
      step: 'quit',
      exit: { code: 0, signal: null },
    });
    qmp.destroy();
  });
});
