// src/block: the BlockDevice contract, storage, and opening images by path.
export type * from './device.js';
export type * from './storage.js';
