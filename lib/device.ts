// Devices: the one home of the Device type, what each device can run, and the choices that follow
// from the device and the precision mode (the KV cache's dtype). The device reaches native code
// in every program spec (lib/graph.ts), where the addon picks its backend (native/runtime/backend.h).
import { DeviceError, UnsupportedError } from './errors.js';
import { addon, type DeviceInfo } from './native.js';

export const DEVICES = ['cpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];

/** 'fp32': every activation and the KV cache in float32 (the reference); 'default': the fastest
 * mode that still meets 1e-3 relative error against it. */
export const PRECISION_MODES = ['default', 'fp32'] as const;
export type PrecisionMode = (typeof PRECISION_MODES)[number];

export type KvDType = 'f32' | 'bf16';

/** What this process can run on: the CPU's SIMD variant and threads, and the CUDA backend's state. */
export function deviceInfo(): DeviceInfo {
  return addon().deviceInfo();
}

/**
 * Throws the typed error that says why `device` cannot run here: ERR_UNSUPPORTED naming what the
 * build lacks (no CUDA compiled in, or no CUDA backend yet), ERR_DEVICE when CUDA is built but no
 * GPU is usable. The addon refuses such a program too; this says so before a checkpoint is read.
 */
export function assertDevice(device: Device): void {
  if (device === 'cuda') {
    const info = addon().deviceInfo().cuda;
    if (!info.built) throw new UnsupportedError(`device 'cuda': ${info.error ?? 'this addon was built without CUDA'}`);
    if (!info.available) throw new DeviceError(`device 'cuda': no usable GPU (${info.error ?? 'no device'})`);
    if (addon().devices.includes(device)) return;
    throw new UnsupportedError(`device 'cuda': ${info.name} found, but this build has no CUDA backend; use device 'cpu'`);
  }
  if (addon().devices.includes(device)) return;
  throw new UnsupportedError(`device '${device}': this addon has no backend for it (it has ${addon().devices.join(', ')})`);
}

/**
 * The KV cache's dtype for a device and mode. 'fp32' keeps it float32 everywhere. 'default' picks
 * the cheapest dtype measured within 1e-3 of the fp32 logits on the fixtures: on the CPU that is
 * still float32 (a bf16 cache gave 2e-3 to 6.5e-3, over the bound); on CUDA, bf16 (half the bytes
 * each decode step streams; its kernels accumulate in f32).
 */
export function kvDTypeFor(device: Device, mode: PrecisionMode): KvDType {
  if (mode === 'fp32') return 'f32';
  return device === 'cuda' ? 'bf16' : 'f32';
}

export const kvDTypeBytes = (t: KvDType): number => (t === 'f32' ? 4 : 2);
