// src/nbd: NBD server and client (NetworkBlockDevice/nbd doc/proto.md), qemu-nbd compatible.
export {
  NbdServer,
  type NbdServerOptions,
  type ListenAddress,
  type BoundAddress,
} from './server.js';
export type { NbdExportOptions, NbdExport } from './export.js';
export { findExportBitmaps, type NbdExportBitmap } from './export-bitmaps.js';
export type { NbdLogger, NbdLogLevel, ConnectionEnd } from './connection.js';
export type { ServerTls, HandshakeLimits } from './handshake.js';
export { toNbdErrno, nbdErrnoToCode } from './errno.js';
export { transmissionFlags, blockSizes } from './export-flags.js';
export { validateRequest, type TransmissionState, type Verdict } from './transmission.js';
export * from './protocol.js';
export { registerNbdProtocols, openNbdImage } from './open-uri.js';
export { NbdClient, NbdRequestError, listNbdExports, type NbdClientOptions } from './client.js';
export { NbdBlockDevice, type OpenNbdOptions } from './client-device.js';
export { parseNbdUri, formatNbdUri, isNbdUri, type NbdUri } from './uri.js';
export { loadX509Creds, loadPskCreds, serverTls, type TlsCreds } from './tls.js';
