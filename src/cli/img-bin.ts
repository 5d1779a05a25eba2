// Entry point of the vmforge-img bundle (dist/bundle/img.cjs, loaded by bin/code-cache.cjs).
import { runBinWith } from './bin.js';
import { runImg } from './img-main.js';

/** `vmforge-img ARGS`; `argv` defaults to process.argv.slice(2) (`vmforge img` passes its own). */
export function runImgBin(argv?: string[]): Promise<void> {
  return runBinWith(runImg, argv);
}
