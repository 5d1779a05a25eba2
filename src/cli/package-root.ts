// Files of the vmforge package (package.json, bin/) located from the running module. The CLI
// runs from tsc's output (dist/cli/...) or from the bundle (dist/bundle/...), at different
// depths, so paths are found by walking up to the directory whose package.json is vmforge's.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The package's root directory (where package.json names "vmforge"). */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      try {
        const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: unknown };
        if (pkg.name === 'vmforge') return (root = dir);
      } catch {
        // not ours; keep walking up
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('vmforge: cannot find the package root (package.json)');
    dir = parent;
  }
}

/** A path inside the package, e.g. packageFile('bin', 'vmforge.js'). */
export function packageFile(...parts: string[]): string {
  return join(packageRoot(), ...parts);
}
