// Fixed facts the firmware helpers rely on: GUIDs from the PI specification, pflash geometry,
// descriptor search directories and the Debian packages that provide firmware and build tools.

/** `_FVH`, EFI_FVH_SIGNATURE (PI spec vol. 3, 3.2.1), read little-endian at header offset 40. */
export const FVH_SIGNATURE = 0x4856465f;
/** Offset of Signature inside EFI_FIRMWARE_VOLUME_HEADER. */
export const FVH_SIGNATURE_OFFSET = 40;
/** EFI_FVH_REVISION. */
export const FVH_REVISION = 2;
/** Fixed part (up to BlockMap) plus one block-map entry and the {0,0} terminator. */
export const FVH_MIN_HEADER_LENGTH = 56 + 8 + 8;

/** File-system GUIDs of firmware volumes, as they appear in FileSystemGuid. */
export const FV_GUIDS = {
  /** EFI_FIRMWARE_FILE_SYSTEM2_GUID: an FFS2 volume holding code (PEI/DXE drivers, apps). */
  ffs2: '8c8ce578-8a3d-4f1c-9935-896185c32dd3',
  /** EFI_FIRMWARE_FILE_SYSTEM3_GUID: FFS3, large files. */
  ffs3: '5473c07a-3dcb-4dca-bd6f-1e9689e7349a',
  /** EFI_SYSTEM_NV_DATA_FV_GUID: the UEFI variable store (the "vars" image). */
  nvram: 'fff12b8d-7696-4c8b-a985-2747075b4f50',
} as const;

/**
 * Each of the two `virt` pflash devices is exactly 64 MiB: the machine splits its 128 MiB flash
 * region in two (qemu hw/arm/virt.c virt_flash_map) and pflash_cfi01 refuses a backend of any
 * other size ("device requires 67108864 bytes").
 */
export const AARCH64_PFLASH_SIZE = 64 * 1024 * 1024;

/** Size QEMU's pflash requires per architecture when it is fixed; undefined: any sector multiple. */
export const PFLASH_SIZE: Partial<Record<string, number>> = {
  aarch64: AARCH64_PFLASH_SIZE,
  arm: AARCH64_PFLASH_SIZE,
};

/** docs/interop/firmware.json: general to specific. The user's dir is resolved at run time. */
export const SYSTEM_DESCRIPTOR_DIRS = ['/usr/share/qemu/firmware', '/etc/qemu/firmware'] as const;

/** Debian packages that ship UEFI firmware (with descriptors) per QEMU target. */
export const FIRMWARE_PACKAGES: Partial<Record<string, string>> = {
  aarch64: 'qemu-efi-aarch64',
  arm: 'qemu-efi-arm',
  x86_64: 'ovmf',
  i386: 'ovmf-ia32',
  riscv64: 'qemu-efi-riscv64',
  loongarch64: 'qemu-efi-loongarch64',
};

/** QEMU system emulator per target (qemu-system-<target>), and its Debian package. */
export const QEMU_SYSTEM_PACKAGES: Partial<Record<string, string>> = {
  aarch64: 'qemu-system-arm',
  arm: 'qemu-system-arm',
  x86_64: 'qemu-system-x86',
  i386: 'qemu-system-x86',
};

/** Node's process.arch → QEMU SysEmuTarget (the host's native target). */
export const NODE_ARCH_TO_QEMU: Partial<Record<string, string>> = {
  x64: 'x86_64',
  arm64: 'aarch64',
  ia32: 'i386',
  arm: 'arm',
  riscv64: 'riscv64',
  loong64: 'loongarch64',
};

/** Native QEMU target of the machine running vmforge. */
export function hostQemuArch(): string {
  return NODE_ARCH_TO_QEMU[process.arch] ?? process.arch;
}
