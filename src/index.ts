// vmforge public API: the library behind the CLI.
export * from './core/index.js';
export * from './block/index.js';
export * as edk2 from './edk2/index.js';
