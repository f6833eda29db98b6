import { addon, type DeviceInfo } from './native.js';

/** What this process can run on: the CPU's SIMD variant and threads, and the CUDA backend's state. */
export function deviceInfo(): DeviceInfo {
  return addon().deviceInfo();
}
