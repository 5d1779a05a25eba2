// Interop tests need real tools (qemu-img, qemu-io, nbdinfo, ...). When one is missing the suite
// is skipped with the reason in its title; with VMFORGE_REQUIRE_TOOLS=1 (CI) it fails instead.
import { spawnSync } from 'node:child_process';
import { describe, it } from 'vitest';

const cache = new Map<string, boolean>();

export function toolAvailable(name: string): boolean {
  let ok = cache.get(name);
  if (ok === undefined) {
    ok =
      spawnSync('sh', ['-c', `command -v ${JSON.stringify(name)}`], { stdio: 'ignore' }).status ===
      0;
    cache.set(name, ok);
  }
  return ok;
}

export function missingTools(tools: string[]): string[] {
  return tools.filter((t) => !toolAvailable(t));
}

/** describe() that requires `tools`: skipped visibly when absent, failing under VMFORGE_REQUIRE_TOOLS=1. */
export function describeWithTools(tools: string[], title: string, fn: () => void): void {
  const missing = missingTools(tools);
  if (missing.length === 0) {
    describe(title, fn);
  } else if (process.env['VMFORGE_REQUIRE_TOOLS'] === '1') {
    describe(title, () => {
      it('has the tools it needs', () => {
        throw new Error(`VMFORGE_REQUIRE_TOOLS=1 but missing: ${missing.join(', ')}`);
      });
    });
  } else {
    describe.skip(`${title} [skipped: ${missing.join(', ')} not installed]`, fn);
  }
}
