// QMP failures: a command QEMU rejected (error class + description), or one that took too long.
import { EnvironmentError, VmforgeError } from '../../core/index.js';

/** QEMU answered `{"error": {"class", "desc"}}`. Never parse `desc` (qmp-spec 2.4.2). */
export class QmpCommandError extends VmforgeError {
  override name = 'QmpCommandError';
  readonly command: string;
  readonly errorClass: string;
  readonly desc: string;
  constructor(command: string, errorClass: string, desc: string) {
    super('environment', 'VMF_QMP_COMMAND', `QMP ${command}: ${errorClass}: ${desc}`, {
      details: { command, class: errorClass },
    });
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

export class QmpTimeoutError extends EnvironmentError {
  override name = 'QmpTimeoutError';
  constructor(what: string, timeoutMs: number) {
    super(`QMP ${what}: no answer within ${timeoutMs / 1000} s`, { code: 'VMF_QMP_TIMEOUT' });
  }
}
