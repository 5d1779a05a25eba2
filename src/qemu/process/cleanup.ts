// Leave nothing behind when the parent goes away (execa lib/terminate/cleanup.js): registered
// child processes are killed and temporary paths removed on normal exit, and on SIGINT / SIGTERM
// / SIGHUP, after which the signal is re-raised so the parent still dies of it. Handlers are
// installed only while something is registered, so a library user's process is left alone.

import { rmSync } from 'node:fs';

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function runAll(): void {
  for (const c of [...cleanups]) {
    cleanups.delete(c);
    try {
      c();
    } catch {
      // best effort: the process is going away
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  runAll();
  uninstall();
  process.kill(process.pid, signal);
}

function install(): void {
  process.on('exit', runAll);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  process.off('exit', runAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Run `fn` (synchronously) if the parent exits or is signalled; returns the unregister function. */
export function onParentExit(fn: Cleanup): () => void {
  if (cleanups.size === 0) install();
  cleanups.add(fn);
  return () => {
    if (cleanups.delete(fn) && cleanups.size === 0) uninstall();
  };
}

/** Remove `path` (recursively) if the parent exits before `release()` is called. */
export function removeOnParentExit(path: string): () => void {
  return onParentExit(() => rmSync(path, { recursive: true, force: true }));
}
