// Entry points for the three binaries. `vmforge` is the umbrella (img, nbd, firmware, hugepages,
// run, qmp); `vmforge-img` and `vmforge-nbd` are drop-ins for qemu-img and qemu-nbd.

import { processIO, type CliIO } from './io.js';
import { runBinWith } from './bin.js';
import { runImg } from './img-main.js';
import { subprograms, type LazySubprogram } from './subprograms.js';

export { runImg };

/** Subprograms of the umbrella `vmforge` command, loaded on first use. */
const allSubprograms: Record<string, LazySubprogram> = {
  img: {
    describe: 'qemu-img compatible image commands (also: vmforge-img)',
    load: async () => (a, io) => runImg(a, io),
  },
  ...subprograms,
};

/** `vmforge ARGS`: dispatch to a subprogram. */
export async function runVmforge(rawArgv: string[], io: CliIO = processIO()): Promise<number> {
  const name = rawArgv[0];
  const sub = name === undefined ? undefined : allSubprograms[name];
  if (sub) return (await sub.load())(rawArgv.slice(1), io);
  if (name === '--version' || name === '-V') {
    io.stdout.write(`vmforge ${await packageVersion()}\n`);
    return 0;
  }
  const lines = Object.entries(allSubprograms).map(([n, s]) => `  ${n.padEnd(12)}${s.describe}`);
  const usage = `Usage: vmforge COMMAND [options]\n\nCommands:\n${lines.join('\n')}\n`;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    io.stdout.write(usage);
    return name === undefined ? 1 : 0;
  }
  io.stderr.write(`vmforge: unknown command '${name}'\n${usage}`);
  return 1;
}

export async function packageVersion(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const { packageFile } = await import('./package-root.js');
  const pkg = JSON.parse(await readFile(packageFile('package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Used by the bin shims: run, set the exit code, never call process.exit(). */
export function runBin(which: 'vmforge' | 'img' | 'nbd'): Promise<void> {
  if (which === 'vmforge') return runBinWith(runVmforge);
  if (which === 'img') return runBinWith(runImg);
  return runBinWith((argv, io) => runVmforge(['nbd', ...argv], io));
}
