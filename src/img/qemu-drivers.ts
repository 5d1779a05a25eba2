// The block drivers Debian's qemu-img 7.2 knows by name, split the way qemu-img's messages split
// them: formats that can create images (they have create_opts) and those that cannot. vmforge
// creates and measures raw and qcow2 only; for the other names it answers as qemu-img does when
// qemu-img itself would refuse, and says plainly that vmforge does not support them otherwise.

/** Drivers with create_opts (bdrv_create works; only qcow2, raw and luks can measure). */
export const QEMU_CREATABLE_DRIVERS: ReadonlySet<string> = new Set([
  'file',
  'gluster',
  'host_cdrom',
  'host_device',
  'iscsi',
  'iser',
  'luks',
  'nbd',
  'nfs',
  'nvme',
  'parallels',
  'qcow',
  'qcow2',
  'qed',
  'raw',
  'rbd',
  'ssh',
  'vdi',
  'vhdx',
  'vmdk',
  'vpc',
]);

/** Drivers without create_opts ("Format driver 'X' does not support image creation"). */
export const QEMU_NON_CREATABLE_DRIVERS: ReadonlySet<string> = new Set([
  'blkdebug',
  'blklogwrites',
  'blkverify',
  'bochs',
  'cloop',
  'compress',
  'copy-before-write',
  'copy-on-read',
  'dmg',
  'ftp',
  'ftps',
  'http',
  'https',
  'null-aio',
  'null-co',
  'preallocate',
  'quorum',
  'replication',
  'snapshot-access',
  'throttle',
  'vvfat',
]);

export function isQemuDriver(name: string): boolean {
  return QEMU_CREATABLE_DRIVERS.has(name) || QEMU_NON_CREATABLE_DRIVERS.has(name);
}
