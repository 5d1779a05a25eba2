// src/luks: LUKS1 headers and LUKS images, for inspection only (no decryption).
export { readLuksInfo } from './luks-header.js';
export { LuksInfoDevice } from './luks-device.js';
