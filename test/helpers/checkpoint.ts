// Writes safetensors files and whole checkpoints for tests (bad-input cases, random models).
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export const fixtures = new URL('../fixtures/', import.meta.url).pathname;

export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** A safetensors file: header JSON padded to 8 bytes, then the tensors back to back. */
export function safetensorsBytes(
  tensors: Record<string, RawTensor>,
  opts: { headerOverride?: object } = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] };
    off += t.data.length;
  }
  let json = Buffer.from(JSON.stringify(opts.headerOverride ?? header));
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = new Uint8Array(8 + json.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let p = 8 + json.length;
  for (const t of Object.values(tensors)) {
    out.set(t.data, p);
    p += t.data.length;
  }
  return out;
}

// Every directory made here is removed after the test file that made it: a full run made about a
// hundred (up to 90 MB each) and left them all behind. (A worker's 'exit' event does not fire.)
const made: string[] = [];
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

export function tmpDir(prefix = 'gptoss-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** A writable copy of a fixture checkpoint directory (e.g. 'tiny-b/original'). */
export function copyFixture(rel: string): string {
  const dir = tmpDir();
  cpSync(join(fixtures, rel), dir, { recursive: true });
  return dir;
}

/** xorshift32: deterministic test data. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function bf16Bytes(values: ArrayLike<number>): Uint8Array {
  const f = new Float32Array(values.length);
  f.set(Array.from(values));
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
  return new Uint8Array(out.buffer);
}

export function bf16Values(bytes: Uint8Array): Float32Array {
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return new Float32Array(u.buffer);
}

export interface TinyShape {
  layers: number;
  hidden: number;
  intermediate: number;
  experts: number;
  topk: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  window: number;
}

/** A random checkpoint in the Hugging Face layout (one shard), for shapes no fixture has. */
export function writeRandomHfCheckpoint(dir: string, s: TinyShape, seed = 1): void {
  const r = rng(seed);
  const D = 64;
  const bf = (shape: number[], scale: number): RawTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { dtype: 'BF16', shape, data: bf16Bytes(Array.from({ length: n }, () => (2 * r() - 1) * scale)) };
  };
  const u8 = (shape: number[], f: () => number): RawTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { dtype: 'U8', shape, data: Uint8Array.from({ length: n }, f) };
  };
  const H = s.hidden,
    I = s.intermediate,
    E = s.experts;
  const t: Record<string, RawTensor> = {
    'model.embed_tokens.weight': bf([s.vocab, H], 1),
    'model.norm.weight': bf([H], 1),
    'lm_head.weight': bf([s.vocab, H], 1 / Math.sqrt(H)),
  };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    t[`${p}.input_layernorm.weight`] = bf([H], 1);
    t[`${p}.self_attn.q_proj.weight`] = bf([s.heads * D, H], 1 / Math.sqrt(H));
    t[`${p}.self_attn.q_proj.bias`] = bf([s.heads * D], 0.1);
    t[`${p}.self_attn.k_proj.weight`] = bf([s.kvHeads * D, H], 1 / Math.sqrt(H));
    t[`${p}.self_attn.k_proj.bias`] = bf([s.kvHeads * D], 0.1);
    t[`${p}.self_attn.v_proj.weight`] = bf([s.kvHeads * D, H], 1 / Math.sqrt(H));
    t[`${p}.self_attn.v_proj.bias`] = bf([s.kvHeads * D], 0.1);
    t[`${p}.self_attn.sinks`] = bf([s.heads], 1);
    t[`${p}.self_attn.o_proj.weight`] = bf([H, s.heads * D], 1 / Math.sqrt(s.heads * D));
    t[`${p}.self_attn.o_proj.bias`] = bf([H], 0.1);
    t[`${p}.post_attention_layernorm.weight`] = bf([H], 1);
    t[`${p}.mlp.router.weight`] = bf([E, H], 1 / Math.sqrt(H));
    t[`${p}.mlp.router.bias`] = bf([E], 0.1);
    t[`${p}.mlp.experts.gate_up_proj_blocks`] = u8([E, 2 * I, H / 32, 16], () => Math.floor(r() * 256));
    t[`${p}.mlp.experts.gate_up_proj_scales`] = u8([E, 2 * I, H / 32], () => 121 + Math.floor(r() * 3));
    t[`${p}.mlp.experts.gate_up_proj_bias`] = bf([E, 2 * I], 0.1);
    t[`${p}.mlp.experts.down_proj_blocks`] = u8([E, H, I / 32, 16], () => Math.floor(r() * 256));
    t[`${p}.mlp.experts.down_proj_scales`] = u8([E, H, I / 32], () => 121 + Math.floor(r() * 3));
    t[`${p}.mlp.experts.down_proj_bias`] = bf([E, H], 0.1);
  }
  const shard = 'model-00000-of-00000.safetensors';
  writeFileSync(join(dir, shard), safetensorsBytes(t));
  writeFileSync(
    join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(Object.keys(t).map((k) => [k, shard])) }),
  );
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['GptOssForCausalLM'],
      model_type: 'gpt_oss',
      num_hidden_layers: s.layers,
      num_local_experts: E,
      num_experts_per_tok: s.topk,
      vocab_size: s.vocab,
      hidden_size: H,
      intermediate_size: I,
      head_dim: D,
      num_attention_heads: s.heads,
      num_key_value_heads: s.kvHeads,
      sliding_window: s.window,
      rope_scaling: {
        rope_type: 'yarn',
        factor: 32,
        beta_fast: 32,
        beta_slow: 1,
        original_max_position_embeddings: 4096,
        truncate: false,
      },
      rope_theta: 150000,
      rms_norm_eps: 1e-5,
      swiglu_limit: 7,
      tie_word_embeddings: false,
      attention_bias: true,
    }),
  );
}

/** Relative error ||a - b|| / ||b|| over whole arrays (fixtures/README.md, "How to compare"). */
export { relErr } from '../../lib/cli/check.js';

/** Rewrites a safetensors file's JSON header in place, keeping the data bytes. */
export function mutateHeader(
  path: string,
  fn: (header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>) => void,
): void {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  fn(header);
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([out, json, buf.subarray(8 + n)]));
}

/** The shape most tests use: two tiny layers over the real 201,088-token vocabulary. */
export const TINY_REAL_VOCAB: TinyShape = {
  layers: 2,
  hidden: 64,
  intermediate: 32,
  experts: 4,
  topk: 2,
  heads: 2,
  kvHeads: 1,
  vocab: 201088,
  window: 4,
};

/** A fresh directory holding a random real-vocabulary checkpoint of TINY_REAL_VOCAB's shape. */
export function tinyRealVocabCheckpoint(seed: number, overrides: Partial<TinyShape> = {}): string {
  const dir = tmpDir();
  writeRandomHfCheckpoint(dir, { ...TINY_REAL_VOCAB, ...overrides }, seed);
  return dir;
}
