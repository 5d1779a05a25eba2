// Golden argv: every launcher feature's spec (feature-specs.ts) pinned to the exact argv it
// produces. Regenerate after an intended change with UPDATE_GOLDEN=1 and review the diff;
// test/interop/qemu-accept.test.ts proves real QEMU accepts each of these command lines.
import { readFile, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { buildArgv, normalizeSpec, planLaunch, resolveModelPaths } from '../../src/qemu/index.js';
import { FEATURE_SPECS } from './feature-specs.js';
import { FAKE_RUN_DIR, fakeProviders } from './support.js';

const goldenPath = (name: string): URL => new URL(`./golden/${name}.argv`, import.meta.url);

async function argvOf(spec: Record<string, unknown>): Promise<string[]> {
  const model = resolveModelPaths(normalizeSpec(structuredClone(spec)), '/vm');
  const plan = await planLaunch(model, {
    providers: fakeProviders(),
    runDir: FAKE_RUN_DIR,
    dryRun: true,
    accel: { accel: 'tcg', note: undefined },
  });
  return buildArgv(plan);
}

describe('golden argv', () => {
  for (const f of FEATURE_SPECS) {
    it(f.name, async () => {
      const text = `${(await argvOf(f.spec)).join('\n')}\n`;
      if (process.env['UPDATE_GOLDEN'] === '1') await writeFile(goldenPath(f.name), text);
      expect(text).toBe(await readFile(goldenPath(f.name), 'utf8'));
    });
  }

  it('never produces a shell string: every argument is its own element', async () => {
    const argv = await argvOf(
      FEATURE_SPECS.find((f) => f.name === 'x86_64-network-shares-misc')!.spec,
    );
    expect(argv).toContain('-chardev');
    expect(argv).toContain('file,id=serial0,path=/vm/serial,, with comma.log');
    expect(argv).toContain('local,id=fs1,path=/vm/rw,,dir,security_model=mapped-xattr');
    expect(argv).toContain(
      'type=1,serial=ds=nocloud;s=http://10.0.2.2:8000/,manufacturer=vmforge,, inc',
    );
  });

  it('applies the machine properties and globals the firmware needs, once', async () => {
    const providers = fakeProviders();
    providers.firmware = {
      locate: (req) =>
        Promise.resolve({
          code: '/fw/code.fd',
          vars: `${req.outDir}/vars.fd`,
          format: 'raw',
          machineProperties: [['smm', 'on']],
          globals: ['driver=cfi.pflash01,property=secure,value=on'],
        }),
      prepare(req) {
        return this.locate(req);
      },
    };
    const model = normalizeSpec({ arch: 'x86_64', firmware: { type: 'uefi', secureBoot: true } });
    const plan = await planLaunch(model, {
      providers,
      runDir: FAKE_RUN_DIR,
      dryRun: true,
      accel: { accel: 'tcg', note: undefined },
    });
    const argv = buildArgv(plan);
    expect(argv).toContain('q35,smm=on,pflash0=fw-code,pflash1=fw-vars');
    expect(argv.filter((a) => a === '-global')).toHaveLength(1);
  });
});
