// src/cli/output: qemu-img 7.2's exact output text (human and JSON) for the inspection
// commands. Pure functions from the QAPI result types (src/img/qapi-types.ts) to strings; no
// I/O. Strings are byte strings (core/byte-string.ts): write them with encodeByteString() to
// reproduce names that are not valid UTF-8 byte for byte.
export * from './qobject-json.js';
export { inQapiOrder } from './qapi-order.js';
export * from './info.js';
export * from './check.js';
export * from './map.js';
export * from './snapshot-list.js';
export * from './measure.js';
