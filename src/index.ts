// vmforge public API: the library behind the CLI.
export * from './core/index.js';
export * from './block/index.js';
export * from './raw/index.js';
export * from './qcow2/index.js';
export * from './image/index.js';
export * as hugetlbfs from './hugetlbfs/index.js';
export * as edk2 from './edk2/index.js';
export * as qemu from './qemu/index.js';
export * from './img/check.js';
export * as nbd from './nbd/index.js';
export * from './img/index.js';
export * from './img/snapshot-resize-amend.js';
