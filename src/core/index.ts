// src/core: domain-free building blocks. Imports nothing else from src/.
export * from './errors.js';
export * from './rate-limit.js';
export * from './bytes.js';
export * from './units.js';
export * from './printf.js';
export * from './byte-string.js';
export { debug } from './debug.js';
export { RwLock } from './rwlock.js';
