// vmforge public API: the library behind the CLI.
export * from './core/index.js';
export * from './block/index.js';
export * as qemu from './qemu/index.js';
