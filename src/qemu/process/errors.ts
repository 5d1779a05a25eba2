// Errors of a QEMU process: it could not start, or it ended badly. Messages carry the command
// and the tail of stderr (execa return/message.js), since that is where QEMU explains itself.
import { EnvironmentError } from '../../core/index.js';

/** Debian packages that ship each emulator (for "install X" hints). */
export const EMULATOR_PACKAGES: Record<string, string> = {
  'qemu-system-aarch64': 'qemu-system-arm',
  'qemu-system-x86_64': 'qemu-system-x86',
};

export class QemuStartError extends EnvironmentError {
  override name = 'QemuStartError';
  constructor(message: string, options: { cause?: unknown; errno?: string } = {}) {
    super(message, { code: 'VMF_QEMU_START', ...options });
  }
}

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function describeExit(exit: QemuExit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with status ${exit.code}`;
}

export class QemuExitError extends EnvironmentError {
  override name = 'QemuExitError';
  readonly exit: QemuExit;
  readonly stderrTail: string;
  constructor(binary: string, exit: QemuExit, stderrTail: string) {
    const tail = stderrTail.trim();
    super(`${binary} ${describeExit(exit)}${tail ? `:\n${tail}` : ''}`, { code: 'VMF_QEMU_EXIT' });
    this.exit = exit;
    this.stderrTail = stderrTail;
  }
}
