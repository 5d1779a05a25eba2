// Shared helpers for the side-by-side benchmarks: run a command N times, report the median wall
// time, and print vmforge/peer ratios. No thresholds: these are measurements, not tests.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));
export const vmforgeImg = [process.execPath, `${root}bin/vmforge-img.js`];

/** Median wall time (ms) of `runs` executions of argv; throws if a run fails. */
export function time(argv, { runs = 5, cwd, env } = {}) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(argv[0], argv.slice(1), {
      cwd,
      env: env ?? process.env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0 && r.status !== 3) {
      throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
    }
    samples.push(ms);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

export function sh(argv, options = {}) {
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
  return r.stdout.toString();
}

/**
 * Print a row: name, peer ms, vmforge ms, ratio (vmforge / peer; < 1 means vmforge is faster),
 * and, for rows that have it, the median of the rounds' own ratios (`paired`).
 */
export function report(rows, peer = 'qemu-img') {
  const w = Math.max(...rows.map((r) => r.name.length), 10);
  const paired = rows.some((r) => r.paired !== undefined);
  console.log(
    `${'case'.padEnd(w)}  ${peer.padStart(10)}  ${'vmforge'.padStart(10)}  ratio${paired ? '  paired' : ''}`,
  );
  for (const r of rows) {
    const extra = r.paired !== undefined ? `  ${r.paired.toFixed(2).padStart(6)}` : '';
    console.log(
      `${r.name.padEnd(w)}  ${r.peer.toFixed(1).padStart(8)}ms  ${r.ours.toFixed(1).padStart(8)}ms  ${(r.ours / r.peer).toFixed(2).padStart(5)}${extra}`,
    );
  }
}
