// src/qemu: the launcher. Spec (YAML/JSON) → VmModel → LaunchPlan → argv → running Vm, with a
// QMP client, serial wait-for, graceful stop and hotplug helpers.
export type * from './model.js';
export type * from './providers.js';
export { SpecError } from './spec/reader.js';
export { normalizeSpec, SPEC_KEYS } from './spec/normalize.js';
export {
  loadSpec,
  parseSpecText,
  readSpecFile,
  applySetOverrides,
  resolveModelPaths,
} from './spec/load.js';
export { resolveAccel, probeKvm, type AccelDecision, type KvmProbe } from './accel.js';
export {
  planLaunch,
  emulatorFor,
  type LaunchPlan,
  type PlanOptions,
  type PlannedDisk,
} from './plan.js';
export { buildArgs, buildArgv } from './argv/build.js';
export {
  defaultProviders,
  edk2FirmwareProvider,
  engineDiskImages,
  hugetlbfsPlanner,
} from './adapters.js';
export { QmpClient, type QmpEvent, type QmpGreeting, type QmpTarget } from './qmp/client.js';
export { QmpCommandError, QmpTimeoutError } from './qmp/errors.js';
export { QemuProcess, type StopOptions, type StopStep } from './process/qemu-process.js';
export { QemuExitError, QemuStartError, describeExit, type QemuExit } from './process/errors.js';
export { SerialLog, SerialTimeoutError, SerialEndedError, stripTerminalCodes } from './serial.js';
export {
  hotplugCpu,
  hotplugMemory,
  unplugDevice,
  unplugMemory,
  type HotpluggableCpu,
} from './hotplug.js';
export { Vm, type LaunchOptions } from './vm.js';
export {
  runDemo,
  buildDemoImage,
  demoPrerequisites,
  DEMO_MARKER,
  type DemoOptions,
  type DemoResult,
} from './demo.js';
