// src/block: the BlockDevice contract, storage, and shared block-level helpers.
export type * from './device.js';
export type * from './storage.js';
export { FileStorage, type FileStorageOptions } from './file-storage.js';
export { MemoryStorage } from './memory-storage.js';
export { composeChainStatus, type LayerExtent } from './chain-status.js';
export { truncateHostFile, parsePreallocMode, type PreallocMode } from './preallocate.js';
export { assertRange } from './range.js';
