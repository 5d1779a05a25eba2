// src/raw: the raw format.
export { RawDevice, type RawDeviceOptions } from './raw-device.js';
