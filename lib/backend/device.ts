// Devices: the one home of the Device type, what each device can run, and the choices that follow
// from the device and the precision mode (the KV cache's dtype). The device reaches native code
// in every program spec (lib/engine/graph.ts), where the addon picks its backend (native/runtime/backend.h).
// Pure definitions: what a device needs from the addon (deviceInfo, assertDevice) is in native.ts.

export const DEVICES = ['cpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];

/** 'fp32': every activation and the KV cache in float32 (the reference). 'default': the fastest
 * mode of each device. On the CPU that is float32 activations and KV cache, with the experts' MXFP4
 * products in bf16 on hi + lo halves of x where the CPU has AVX-512 BF16 (~1e-5 of fp32). On CUDA it is bf16
 * products and a bf16 KV cache, as the official reference runs in bf16, held to `gptoss check`'s
 * default-mode bound: twice the reference's own bf16 error on the fixtures. */
export const PRECISION_MODES = ['default', 'fp32'] as const;
export type PrecisionMode = (typeof PRECISION_MODES)[number];

export type KvDType = 'f32' | 'bf16';

/**
 * The KV cache's dtype for a device and mode. 'fp32' keeps it float32 everywhere. 'default': on the
 * CPU still float32 (a bf16 cache gave 2e-3 to 6.5e-3, over the CPU's 1e-3 bound); on CUDA, bf16
 * (half the bytes each decode step streams; its kernels accumulate in f32).
 */
export function kvDTypeFor(device: Device, mode: PrecisionMode): KvDType {
  if (mode === 'fp32') return 'f32';
  return device === 'cuda' ? 'bf16' : 'f32';
}

export const kvDTypeBytes = (t: KvDType): number => (t === 'f32' ? 4 : 2);
