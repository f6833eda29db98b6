// Synthetic models as files: the bytes createSyntheticModel generates in memory (the addon's
// splitmix64 fill in native/weights.cc, ported here bit for bit), written as a checkpoint in the
// original layout (config.json + model.safetensors) that loadModel reads. A benchmark can then give
// the very same weights to another engine (lib/checkpoint/gguf.ts writes them as GGUF for
// llama.cpp). test/gguf.test.ts checks the port: a model loaded from the written file gives the
// same logits, bit for bit, as createSyntheticModel with the same config and seed.
import { mkdir, open, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ModelConfig } from './config.js';
import { tensorNames } from './checkpoint.js';
import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import type { SyntheticTensorSpec } from '../backend/native.js';
import { syntheticTensorSpecs } from '../engine/synthetic.js';

// --- splitmix64 in 32-bit halves (V8 has no fast 64-bit integers; BigInt allocates per operation) ---

/**
 * Draws splitmix64 values (native/weights.cc mix()) of the states s, s + 1, ..., s + n - 1 into
 * out[2i] (low 32 bits) and out[2i + 1] (high), so `out`'s bytes are the draws as little-endian
 * 64-bit words. Products of 64-bit numbers are built from 16-bit limbs for the high half and
 * Math.imul for the rest; every intermediate stays an exact integer below 2^53.
 */
function mixRun(sHi: number, sLo: number, n: number, out: Int32Array): void {
  for (let i = 0; i < n; i++) {
    // z = s + 0x9e3779b97f4a7c15
    let lo = sLo + 0x7f4a7c15;
    let hi = (sHi + 0x9e3779b9 + (lo > 0xffffffff ? 1 : 0)) | 0;
    lo = lo | 0;
    // z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
    lo = lo ^ ((lo >>> 30) | (hi << 2));
    hi = hi ^ (hi >>> 30);
    let a0 = lo & 0xffff,
      a1 = lo >>> 16;
    let p01 = a0 * 0x1ce4,
      p10 = a1 * 0xe5b9;
    let mid = ((a0 * 0xe5b9) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    let h =
      (a1 * 0x1ce4 +
        (p01 >>> 16) +
        (p10 >>> 16) +
        (mid >>> 16) +
        Math.imul(lo, 0xbf58476d) +
        Math.imul(hi, 0x1ce4e5b9)) |
      0;
    lo = Math.imul(lo, 0x1ce4e5b9);
    hi = h;
    // z = (z ^ (z >> 27)) * 0x94d049bb133111eb
    lo = lo ^ ((lo >>> 27) | (hi << 5));
    hi = hi ^ (hi >>> 27);
    a0 = lo & 0xffff;
    a1 = lo >>> 16;
    p01 = a0 * 0x1331;
    p10 = a1 * 0x11eb;
    mid = ((a0 * 0x11eb) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    h =
      (a1 * 0x1331 +
        (p01 >>> 16) +
        (p10 >>> 16) +
        (mid >>> 16) +
        Math.imul(lo, 0x94d049bb) +
        Math.imul(hi, 0x133111eb)) |
      0;
    lo = Math.imul(lo, 0x133111eb);
    hi = h;
    // z ^ (z >> 31)
    out[2 * i] = lo ^ ((lo >>> 31) | (hi << 1));
    out[2 * i + 1] = hi ^ (hi >>> 31);
    sLo = (sLo + 1) >>> 0;
    if (sLo === 0) sHi = (sHi + 1) >>> 0;
  }
}

const M64 = (1n << 64n) - 1n;

/** mix(z) of one 64-bit z, in BigInt (a few calls per 64 KiB chunk). */
function mixBig(z: bigint): bigint {
  z = (z + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** Bytes per generator chunk: each chunk has its own stream, so any range can be generated alone. */
const CHUNK = 1 << 16;

/** Scratch for one chunk's draws: at most one per byte (u8-around). */
const draws = new Int32Array(2 * CHUNK);
const drawBytes = new Uint8Array(draws.buffer);
const floats = new Float32Array(CHUNK / 2);
const floatBits = new Uint32Array(floats.buffer);

/** kernels/cpu/simd.h f32_to_bf16 of a float's bits: round to nearest even, NaN kept quiet. */
const bf16Of = (u: number): number =>
  (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) & 0xffff : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;

/**
 * Writes bytes [begin, begin + out.length) of a synthetic tensor into `out`: the same bytes the
 * addon's addSynthetic() generates for `spec` (native/weights.cc fill(): per 64 KiB chunk c, the
 * state starts at mix(seed * 0x100000001b3 + c) and steps by one per draw).
 */
export function fillSynthetic(spec: SyntheticTensorSpec, begin: number, out: Uint8Array): void {
  const end = begin + out.length;
  if (!(Number.isSafeInteger(begin) && begin >= 0 && end <= spec.bytes))
    throw new InvalidArgumentError(
      `fillSynthetic: [${begin}, ${end}) is outside the ${spec.bytes} bytes of ${spec.name}`,
    );
  if (spec.kind !== 'u8-uniform' && spec.kind !== 'u8-around' && (begin % 2 || end % 2))
    throw new InvalidArgumentError('fillSynthetic: a bf16 range must start and end on whole values');
  if (spec.kind === 'bf16-const') {
    floats[0] = spec.a;
    const k = bf16Of(floatBits[0]);
    for (let i = 0; i < out.length; i += 2) {
      out[i] = k & 0xff;
      out[i + 1] = k >>> 8;
    }
    return;
  }
  for (let c = Math.floor(begin / CHUNK); c * CHUNK < end; c++) {
    const c0 = c * CHUNK,
      from = Math.max(begin, c0),
      to = Math.min(end, c0 + CHUNK);
    const z = mixBig((BigInt(spec.seed) * 0x100000001b3n + BigInt(c)) & M64);
    // The state of draw k of this chunk is z + k.
    const state = (k: number): [number, number] => {
      const s = (z + BigInt(k)) & M64;
      return [Number(s >> 32n), Number(s & 0xffffffffn)];
    };
    if (spec.kind === 'u8-uniform') {
      // One draw per 8 bytes, little-endian; a range may start inside a draw.
      const k0 = Math.floor((from - c0) / 8),
        k1 = Math.ceil((to - c0) / 8);
      const [hi, lo] = state(k0);
      mixRun(hi, lo, k1 - k0, draws);
      const skip = from - c0 - 8 * k0;
      out.set(drawBytes.subarray(skip, skip + (to - from)), from - begin);
    } else if (spec.kind === 'u8-around') {
      // E8M0 scales within one binade of the centre: a + (draw mod 3) - 1, with 2^32 = 1 (mod 3).
      const [hi, lo] = state(from - c0);
      mixRun(hi, lo, to - from, draws);
      const centre = Math.trunc(spec.a);
      for (let i = 0; i < to - from; i++)
        out[from - begin + i] = centre + ((((draws[2 * i + 1] >>> 0) % 3) + ((draws[2 * i] >>> 0) % 3)) % 3) - 1;
    } else {
      // bf16-uniform: u = top 53 bits / 2^53; (2u - 1) a in double, rounded to float (the typed
      // array store rounds to nearest even, as C++'s cast does), then to bf16.
      const n = (to - from) / 2;
      const [hi, lo] = state((from - c0) / 2);
      mixRun(hi, lo, n, draws);
      const a = spec.a;
      for (let i = 0; i < n; i++) {
        const u = ((draws[2 * i + 1] >>> 0) * 2097152 + ((draws[2 * i] >>> 11) >>> 0)) / 9007199254740992;
        floats[i] = (2 * u - 1) * a;
      }
      let o = from - begin;
      for (let i = 0; i < n; i++, o += 2) {
        const b = bf16Of(floatBits[i]);
        out[o] = b & 0xff;
        out[o + 1] = b >>> 8;
      }
    }
  }
}

// --- the checkpoint ---

/** Keys of the original layout's config.json for `cfg` (what parseConfig reads back as `cfg`). */
export function originalConfigJson(cfg: ModelConfig): Record<string, number> {
  const windows = cfg.layerWindows.every((w, l) => w === (l % 2 === 0 ? cfg.slidingWindow : 0));
  if (!windows || cfg.swigluAlpha !== 1.702 || cfg.rmsNormEps !== 1e-5)
    throw new UnsupportedError(
      'the original layout fixes swiglu alpha (1.702), the norm epsilon (1e-5) and which layers slide (even ones); this config differs',
    );
  return {
    num_hidden_layers: cfg.numLayers,
    num_experts: cfg.numExperts,
    experts_per_token: cfg.expertsPerToken,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    swiglu_limit: cfg.swigluLimit,
    head_dim: cfg.headDim,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    sliding_window: cfg.slidingWindow,
    initial_context_length: cfg.initialContextLength,
    rope_theta: cfg.ropeTheta,
    rope_scaling_factor: cfg.ropeScalingFactor,
    rope_ntk_alpha: cfg.ropeNtkAlpha,
    rope_ntk_beta: cfg.ropeNtkBeta,
  };
}

export interface WriteSyntheticOptions {
  /** Called after each tensor with the bytes written so far and in all. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/**
 * Writes the synthetic model of `cfg` and `seed` (createSyntheticModel's weights) into `dir` as an
 * original-layout checkpoint: config.json and one model.safetensors, streamed (never the whole
 * model in memory). The file appears under its name only once complete.
 */
export async function writeSyntheticCheckpoint(
  dir: string,
  cfg: ModelConfig,
  seed: number,
  options: WriteSyntheticOptions = {},
): Promise<{ path: string; bytes: number }> {
  const config = originalConfigJson(cfg);
  const { specs, idx } = syntheticTensorSpecs(cfg, seed);
  const names = tensorNames(cfg, 'original');
  const H = cfg.hiddenSize,
    I = cfg.intermediateSize,
    E = cfg.numExperts,
    V = cfg.vocabSize;
  // Checkpoint name, dtype and shape of each synthetic tensor, in the addon's order.
  const entries: { name: string; dtype: 'BF16' | 'U8'; shape: number[]; spec: SyntheticTensorSpec }[] = [];
  const add = (name: string, dtype: 'BF16' | 'U8', shape: number[], i: number) =>
    entries.push({ name, dtype, shape, spec: specs[i] });
  add(names.embedding, 'BF16', [V, H], idx.embedding);
  add(names.norm, 'BF16', [H], idx.norm);
  add(names.unembedding, 'BF16', [V, H], idx.unembedding);
  idx.layers.forEach((l, n) => {
    const m = names.layers[n];
    const qkv = l.qkv[0];
    add(m.attnNorm, 'BF16', [H], l.attnNorm);
    add(m.qkv[0].weight, 'BF16', [qkv.rows, H], qkv.weight);
    add(m.qkv[0].bias, 'BF16', [qkv.rows], qkv.bias);
    add(m.sinks, 'BF16', [cfg.numHeads], l.sinks);
    add(m.outWeight, 'BF16', [H, cfg.numHeads * cfg.headDim], l.outWeight);
    add(m.outBias, 'BF16', [H], l.outBias);
    add(m.mlpNorm, 'BF16', [H], l.mlpNorm);
    add(m.routerWeight, 'BF16', [E, H], l.routerWeight);
    add(m.routerBias, 'BF16', [E], l.routerBias);
    add(m.mlp1Blocks, 'U8', [E, 2 * I, H / 32, 16], l.mlp1Blocks);
    add(m.mlp1Scales, 'U8', [E, 2 * I, H / 32], l.mlp1Scales);
    add(m.mlp1Bias, 'BF16', [E, 2 * I], l.mlp1Bias);
    add(m.mlp2Blocks, 'U8', [E, H, I / 32, 16], l.mlp2Blocks);
    add(m.mlp2Scales, 'U8', [E, H, I / 32], l.mlp2Scales);
    add(m.mlp2Bias, 'BF16', [E, H], l.mlp2Bias);
  });
  for (const e of entries) {
    const want = e.shape.reduce((a, b) => a * b, 1) * (e.dtype === 'BF16' ? 2 : 1);
    if (want !== e.spec.bytes)
      throw new Error(`synthetic tensor ${e.spec.name}: ${e.spec.bytes} bytes, but ${e.name} needs ${want}`);
  }

  const header: Record<string, unknown> = { __metadata__: { format: 'pt', synthetic_seed: String(seed) } };
  let offset = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.spec.bytes] };
    offset += e.spec.bytes;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const total = 8 + json.length + offset;

  await mkdir(dir, { recursive: true });
  const path = join(dir, 'model.safetensors');
  const partial = `${path}.partial`;
  const fh = await open(partial, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await fh.write(len);
    await fh.write(json);
    let done = 8 + json.length;
    const buf = new Uint8Array(16 << 20);
    for (const e of entries) {
      for (let at = 0; at < e.spec.bytes; at += buf.length) {
        const piece = buf.subarray(0, Math.min(buf.length, e.spec.bytes - at));
        fillSynthetic(e.spec, at, piece);
        await fh.write(piece);
      }
      done += e.spec.bytes;
      options.onProgress?.(done, total);
    }
  } finally {
    await fh.close();
  }
  await rename(partial, path);
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return { path, bytes: total };
}
