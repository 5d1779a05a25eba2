// src/image: open and create images by name (format probing, backing chains, protocols).
export {
  openImage,
  registerProtocol,
  isProtocolUri,
  isQcow2,
  type OpenImageOptions,
  type ProtocolOpener,
  type SupportedFormat,
} from './open.js';
export { createImage, type CreateImageOptions } from './create.js';
export { probeFormat, type ProbedFormat } from './probe.js';
