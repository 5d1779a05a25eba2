// src/edk2: UEFI firmware for QEMU — descriptors (docs/interop/firmware.json), discovery,
// fetch (undici + tar + zip), per-VM pflash preparation, and an edk2 build wrapper.
// The launcher uses findFirmware/prepareFirmware; the CLI (vmforge firmware) wraps all five.

export {
  listFirmware,
  type ListFirmwareOptions,
  type FirmwareList,
  type FirmwareEntry,
  type MaskedEntry,
} from './list.js';
export {
  findFirmware,
  type FindFirmwareOptions,
  type FirmwareMatch,
  type FirmwareFile,
  type Rejection,
} from './find.js';
export {
  fetchFirmware,
  CATALOGUE,
  type FetchFirmwareOptions,
  type FetchedFirmware,
  type FetchProgress,
  type CatalogueEntry,
} from './fetch/index.js';
export {
  prepareFirmware,
  type PrepareFirmwareOptions,
  type PreparedFirmware,
  type PreparedFile,
} from './prepare.js';
export {
  buildFirmware,
  featuresFor,
  type BuildFirmwareOptions,
  type BuildFirmwareResult,
  type BuildProgress,
} from './build/index.js';
export {
  decodeDescriptor,
  validateDescriptor,
  encodeDescriptor,
  FIRMWARE_FEATURES,
  FLASH_MODES,
  type FirmwareDescriptor,
  type FirmwareMapping,
  type FirmwareTarget,
  type FlashMode,
  type FirmwareInterface,
} from './descriptor.js';
export {
  decodeFirmwareVolumeHeader,
  validateFirmwareVolumeHeader,
  encodeFirmwareVolumeHeader,
  findFirmwareVolumes,
  type FirmwareVolumeHeader,
  type FirmwareVolume,
  type ImageReader,
} from './firmware-volume.js';
export { sniffImage, type SniffedImage } from './image-format.js';
export {
  resolveMachine,
  parseMachineHelp,
  qemuMachineLister,
  type MachineLister,
  type ResolvedMachine,
} from './machine.js';
export { globMatch } from './glob.js';
export { defaultCacheDir, defaultDescriptorDirs, userDescriptorDir } from './paths.js';
export { AARCH64_PFLASH_SIZE, FIRMWARE_PACKAGES, hostQemuArch } from './constants.js';
