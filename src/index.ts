// vmforge public API: the library behind the CLI.
export * from './core/index.js';
export * from './block/index.js';
export * from './raw/index.js';
export * from './qcow2/index.js';
export * from './image/index.js';
export * from './img/check.js';
