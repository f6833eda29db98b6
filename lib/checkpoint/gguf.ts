// A GGUF writer, and gpt-oss checkpoints written as the GGUF llama.cpp's gpt-oss loader reads, so
// benchmarks can run llama.cpp on the very weights this engine runs (benchmarks/llama-cpp.mjs).
//
// GGUF (version 3, little-endian): "GGUF", version, tensor count, metadata count; the metadata
// (key, type, value); per tensor its name, dimensions (innermost first: ggml's ne[0] is the
// contiguous one), ggml type and offset into the data section; padding to the alignment (32),
// then the tensors, each starting on an aligned offset.
//
// The gpt-oss mapping (facts read from llama.cpp: src/models/openai-moe.cpp, src/llama-arch.cpp,
// conversion/gpt_oss.py, ggml-common.h, at the release node-llama-cpp 3.22.1 ships):
// - architecture "gpt-oss"; QKV fused as blk.N.attn_qkv (Q, K, V rows in that order, as the
//   checkpoint has them); sinks as blk.N.attn_sinks.weight; the MoE norm as post_attention_norm.
// - mlp1's interleaved rows split as llama.cpp's converter does: even rows (gate) become
//   ffn_gate_exps, odd rows (linear) ffn_up_exps, and their biases likewise.
// - experts in ggml's MXFP4: 17-byte blocks {E8M0 scale, 16 bytes}, the scale byte unchanged
//   (ggml decodes 2^(e-128) times doubled E2M1 values: the same numbers), and the nibbles
//   reordered: byte j holds element j (low nibble) and element j + 16 (high), where the
//   checkpoint's byte b holds elements 2b and 2b + 1 (gpt-oss-spec §3).
// - bf16 matrices stay bf16; 1-D tensors, biases and the router matrix are written as f32 (what
//   llama.cpp's converter does; bf16 -> f32 is exact), so every value is the checkpoint's.
// - YaRN: rope.scaling.type "yarn", factor, original context, beta fast/slow. llama.cpp floors and
//   ceils the ramp bounds (8, 18 where gpt-oss uses 8.09, 17.40): a small difference of its own.
import { open, rename, type FileHandle } from 'node:fs/promises';

import { openCheckpoint, type Checkpoint } from './checkpoint.js';
import type { ModelConfig } from './config.js';
import { harmonyVocab } from './gguf-vocab.js';
import { CheckpointError, UnsupportedError } from '../errors.js';

// --- GGUF itself ---

const GGUF_ALIGNMENT = 32;

/** ggml tensor types written here (ggml.h). */
export const GGML_TYPE = { F32: 0, BF16: 30, MXFP4: 39 } as const;
export type GgmlType = keyof typeof GGML_TYPE;

/** Bytes of `n` values of a type; MXFP4 counts 17 bytes per block of 32. */
export function ggmlBytes(type: GgmlType, n: number): number {
  if (type === 'F32') return 4 * n;
  if (type === 'BF16') return 2 * n;
  if (n % 32) throw new UnsupportedError(`MXFP4 rows must be whole 32-value blocks, got ${n} values`);
  return (n / 32) * 17;
}

/** gguf.h value types. */
const VT = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10 } as const;

export type GgufValue =
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'string[]'; value: readonly string[] }
  | { type: 'i32[]'; value: ArrayLike<number> };

export interface GgufTensor {
  name: string;
  /** ggml's ne: innermost (contiguous) dimension first. */
  dims: number[];
  type: GgmlType;
  /** Produces the tensor's bytes, in order, through `write` (exactly ggmlBytes(type, numel)). */
  produce(write: (bytes: Uint8Array) => Promise<void>): Promise<void>;
}

/** Grows a byte buffer for the header (metadata and tensor infos). */
class Bytes {
  #buf = Buffer.alloc(1 << 20);
  length = 0;
  #room(n: number) {
    if (this.length + n <= this.#buf.length) return;
    const next = Buffer.alloc(Math.max(this.#buf.length * 2, this.length + n));
    this.#buf.copy(next, 0, 0, this.length);
    this.#buf = next;
  }
  u32(v: number) {
    this.#room(4);
    this.#buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number) {
    this.#room(4);
    this.#buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  u64(v: number) {
    this.#room(8);
    this.#buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  f32(v: number) {
    this.#room(4);
    this.#buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  u8(v: number) {
    this.#room(1);
    this.#buf[this.length++] = v;
  }
  string(s: string) {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.#room(n);
    this.#buf.write(s, this.length, 'utf8');
    this.length += n;
  }
  pad(alignment: number) {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.#room(n);
    this.#buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  get bytes(): Buffer {
    return this.#buf.subarray(0, this.length);
  }
}

function writeValue(b: Bytes, v: GgufValue): void {
  switch (v.type) {
    case 'u32':
      b.u32(VT.u32);
      return b.u32(v.value);
    case 'i32':
      b.u32(VT.i32);
      return b.i32(v.value);
    case 'f32':
      b.u32(VT.f32);
      return b.f32(v.value);
    case 'bool':
      b.u32(VT.bool);
      return b.u8(v.value ? 1 : 0);
    case 'string':
      b.u32(VT.string);
      return b.string(v.value);
    case 'string[]':
      b.u32(VT.array);
      b.u32(VT.string);
      b.u64(v.value.length);
      for (const s of v.value) b.string(s);
      return;
    case 'i32[]':
      b.u32(VT.array);
      b.u32(VT.i32);
      b.u64(v.value.length);
      for (let i = 0; i < v.value.length; i++) b.i32(v.value[i]);
      return;
  }
}

export interface WriteGgufOptions {
  /** Called after each tensor with the bytes written so far and in all. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/**
 * Writes a GGUF file: the metadata in the given order, then the tensors. Streams each tensor
 * through a 16 MiB buffer; the file appears under `path` only once complete.
 */
export async function writeGguf(
  path: string,
  metadata: [string, GgufValue][],
  tensors: GgufTensor[],
  options: WriteGgufOptions = {},
): Promise<{ bytes: number }> {
  const head = new Bytes();
  head.u32(0x46554747); // "GGUF" read as a little-endian u32
  head.u32(3);
  head.u64(tensors.length);
  head.u64(metadata.length + 1);
  head.string('general.alignment');
  writeValue(head, { type: 'u32', value: GGUF_ALIGNMENT });
  for (const [k, v] of metadata) {
    head.string(k);
    writeValue(head, v);
  }
  const sizes = tensors.map((t) =>
    ggmlBytes(
      t.type,
      t.dims.reduce((a, b) => a * b, 1),
    ),
  );
  let offset = 0;
  const align = (n: number) => Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  tensors.forEach((t, i) => {
    head.string(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    offset = align(offset + sizes[i]);
  });
  head.pad(GGUF_ALIGNMENT);
  const total = head.length + offset;

  const partial = `${path}.partial`;
  const fh = await open(partial, 'w');
  try {
    await fh.write(head.bytes);
    let done = head.length;
    // Tensors go out in large writes: a 16 MiB staging buffer.
    const stage = Buffer.alloc(16 << 20);
    let staged = 0;
    const flush = async () => {
      if (staged) await fh.write(stage, 0, staged);
      staged = 0;
    };
    const write = async (bytes: Uint8Array) => {
      for (let at = 0; at < bytes.length;) {
        const n = Math.min(bytes.length - at, stage.length - staged);
        stage.set(bytes.subarray(at, at + n), staged);
        staged += n;
        at += n;
        if (staged === stage.length) await flush();
      }
    };
    for (const [i, t] of tensors.entries()) {
      let wrote = 0;
      await t.produce(async (bytes) => {
        wrote += bytes.length;
        if (wrote > sizes[i]) throw new Error(`gguf: tensor ${t.name} produced more than its ${sizes[i]} bytes`);
        await write(bytes);
      });
      if (wrote !== sizes[i]) throw new Error(`gguf: tensor ${t.name} produced ${wrote} of its ${sizes[i]} bytes`);
      const pad = align(wrote) - wrote;
      if (pad) await write(new Uint8Array(pad));
      done += align(wrote);
      options.onProgress?.(done, total);
    }
    await flush();
  } finally {
    await fh.close();
  }
  await rename(partial, path);
  return { bytes: total };
}

// --- gpt-oss ---

/** llama.cpp's file type for "MXFP4 experts, the rest unquantized" (LLAMA_FTYPE_MOSTLY_MXFP4_MOE). */
const FILE_TYPE_MXFP4_MOE = 38;

/** The metadata llama.cpp's gpt-oss loader reads (hyperparameters and the vocabulary). */
export function gptOssMetadata(cfg: ModelConfig, name: string): [string, GgufValue][] {
  const vocab = harmonyVocab(cfg.vocabSize);
  const u32 = (value: number): GgufValue => ({ type: 'u32', value });
  const f32 = (value: number): GgufValue => ({ type: 'f32', value });
  const a = 'gpt-oss';
  return [
    ['general.architecture', { type: 'string', value: a }],
    ['general.name', { type: 'string', value: name }],
    ['general.file_type', u32(FILE_TYPE_MXFP4_MOE)],
    ['general.quantization_version', u32(2)],
    [`${a}.context_length`, u32(cfg.maxContext)],
    [`${a}.embedding_length`, u32(cfg.hiddenSize)],
    [`${a}.block_count`, u32(cfg.numLayers)],
    [`${a}.feed_forward_length`, u32(cfg.intermediateSize)],
    [`${a}.expert_feed_forward_length`, u32(cfg.intermediateSize)],
    [`${a}.expert_count`, u32(cfg.numExperts)],
    [`${a}.expert_used_count`, u32(cfg.expertsPerToken)],
    [`${a}.attention.head_count`, u32(cfg.numHeads)],
    [`${a}.attention.head_count_kv`, u32(cfg.numKvHeads)],
    [`${a}.attention.key_length`, u32(cfg.headDim)],
    [`${a}.attention.value_length`, u32(cfg.headDim)],
    [`${a}.attention.layer_norm_rms_epsilon`, f32(cfg.rmsNormEps)],
    [`${a}.attention.sliding_window`, u32(cfg.slidingWindow)],
    [`${a}.rope.dimension_count`, u32(cfg.headDim)],
    [`${a}.rope.freq_base`, f32(cfg.ropeTheta)],
    [`${a}.rope.scaling.type`, { type: 'string', value: 'yarn' }],
    [`${a}.rope.scaling.factor`, f32(cfg.ropeScalingFactor)],
    [`${a}.rope.scaling.original_context_length`, u32(cfg.initialContextLength)],
    [`${a}.rope.scaling.yarn_beta_fast`, f32(cfg.ropeNtkBeta)],
    [`${a}.rope.scaling.yarn_beta_slow`, f32(cfg.ropeNtkAlpha)],
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: 'gpt-4o' }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: vocab.tokens }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: vocab.types }],
    ['tokenizer.ggml.merges', { type: 'string[]', value: vocab.merges }],
    ['tokenizer.ggml.bos_token_id', u32(vocab.bos)],
    ['tokenizer.ggml.eos_token_id', u32(vocab.eos)],
    ['tokenizer.ggml.padding_token_id', u32(vocab.pad)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: false }],
  ];
}

/**
 * ggml MXFP4 nibble order from the checkpoint's, two bytes at a time: input bytes a = in[m] and
 * b = in[8 + m] (elements 2m, 2m+1 and 2m+16, 2m+17) give output bytes 2m (elements 2m, 2m+16)
 * and 2m+1 (elements 2m+1, 2m+17), as out[2m] | out[2m+1] << 8 at index a << 8 | b.
 */
const NIBBLE_PAIRS = (() => {
  const t = new Uint16Array(65536);
  for (let a = 0; a < 256; a++)
    for (let b = 0; b < 256; b++) t[(a << 8) | b] = (a & 0x0f) | ((b & 0x0f) << 4) | (((a >> 4) | (b & 0xf0)) << 8);
  return t;
})();

/** ggml MXFP4 blocks of rows of one expert: `blocks` [rows, K/32, 16] and `scales` [rows, K/32]. */
export function toGgmlMxfp4(blocks: Uint8Array, scales: Uint8Array, rows: number[], perRow: number): Uint8Array {
  const out = new Uint8Array(rows.length * perRow * 17);
  let o = 0;
  for (const r of rows) {
    for (let g = 0; g < perRow; g++) {
      const s = r * perRow + g;
      out[o] = scales[s];
      const src = s * 16;
      for (let m = 0; m < 8; m++) {
        const v = NIBBLE_PAIRS[(blocks[src + m] << 8) | blocks[src + 8 + m]];
        out[o + 1 + 2 * m] = v & 0xff;
        out[o + 2 + 2 * m] = v >>> 8;
      }
      o += 17;
    }
  }
  return out;
}

/** bf16 bytes as float32 bytes (exact: a bf16 is the top half of its float32). */
function bf16ToF32(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length * 2);
  for (let i = 0, o = 0; i < b.length; i += 2, o += 4) {
    out[o + 2] = b[i];
    out[o + 3] = b[i + 1];
  }
  return out;
}

/** Reads tensor bytes of an opened checkpoint (bounds checked against the tensor). */
class CheckpointReader {
  readonly #ckpt: Checkpoint;
  readonly #handles = new Map<number, FileHandle>();
  constructor(ckpt: Checkpoint) {
    this.#ckpt = ckpt;
  }
  size(name: string): number {
    const t = this.#ckpt.tensors.get(name);
    if (!t) throw new CheckpointError('missing', { file: this.#ckpt.dir, tensor: name });
    return t[1].byteLength;
  }
  async read(name: string, begin = 0, length = this.size(name) - begin): Promise<Uint8Array> {
    const [fi, e] = this.#ckpt.tensors.get(name)!;
    if (begin < 0 || begin + length > e.byteLength) throw new RangeError(`read of ${name} outside its bytes`);
    let fh = this.#handles.get(fi);
    if (!fh) this.#handles.set(fi, (fh = await open(this.#ckpt.files[fi].path, 'r')));
    const out = Buffer.alloc(length);
    for (let got = 0; got < length;) {
      const { bytesRead } = await fh.read(out, got, length - got, e.offset + begin + got);
      if (bytesRead === 0)
        throw new CheckpointError('file ends inside the tensor', { file: this.#ckpt.files[fi].path, tensor: name });
      got += bytesRead;
    }
    return out;
  }
  async close(): Promise<void> {
    for (const fh of this.#handles.values()) await fh.close();
    this.#handles.clear();
  }
}

export interface WriteGptOssGgufOptions extends WriteGgufOptions {
  /** general.name (default: the checkpoint directory). */
  name?: string;
}

/**
 * Writes the gpt-oss checkpoint in `dir` (either layout) as one GGUF file at `path` for llama.cpp,
 * with the o200k_harmony vocabulary. The values are the checkpoint's, bit for bit (see the header).
 */
export async function writeGptOssGguf(
  dir: string,
  path: string,
  options: WriteGptOssGgufOptions = {},
): Promise<{ bytes: number; config: ModelConfig }> {
  const ckpt = await openCheckpoint(dir);
  const cfg = ckpt.config;
  const names = ckpt.names;
  const H = cfg.hiddenSize,
    I = cfg.intermediateSize,
    E = cfg.numExperts,
    V = cfg.vocabSize;
  if (V !== 201088)
    throw new UnsupportedError(`GGUF needs the o200k_harmony vocabulary (201,088 ids); this checkpoint has ${V}`);
  const qkvRows = (cfg.numHeads + 2 * cfg.numKvHeads) * cfg.headDim;
  const src = new CheckpointReader(ckpt);
  const PIECE = 16 << 20;

  /** A bf16 tensor copied as it is, in pieces. */
  const copy = (name: string, ggufName: string, dims: number[]): GgufTensor => ({
    name: ggufName,
    dims,
    type: 'BF16',
    produce: async (write) => {
      const n = src.size(name);
      for (let at = 0; at < n; at += PIECE) await write(await src.read(name, at, Math.min(PIECE, n - at)));
    },
  });
  /** bf16 tensors (small: norms, biases, sinks, the router) as f32, concatenated in order. */
  const f32 = (
    parts: string[],
    ggufName: string,
    dims: number[],
    pick?: (b: Uint8Array) => Uint8Array,
  ): GgufTensor => ({
    name: ggufName,
    dims,
    type: 'F32',
    produce: async (write) => {
      for (const p of parts) {
        const b = await src.read(p);
        await write(bf16ToF32(pick ? pick(b) : b));
      }
    },
  });
  /** Every other bf16 value of [rows, 2 * cols]: even (gate) or odd (linear) columns. */
  const alternate = (parity: 0 | 1) => (b: Uint8Array) => {
    const out = new Uint8Array(b.length / 2);
    for (let i = parity, o = 0; 2 * i < b.length; i += 2, o += 2) {
      out[o] = b[2 * i];
      out[o + 1] = b[2 * i + 1];
    }
    return out;
  };
  /** MXFP4 experts: `rows` rows of each expert out of `allRows`, in ggml's block layout. */
  const experts = (
    blocks: string,
    scales: string,
    ggufName: string,
    K: number,
    allRows: number,
    rows: number[],
  ): GgufTensor => ({
    name: ggufName,
    dims: [K, rows.length, E],
    type: 'MXFP4',
    produce: async (write) => {
      const perRow = K / 32;
      for (let e = 0; e < E; e++) {
        const b = await src.read(blocks, e * allRows * perRow * 16, allRows * perRow * 16);
        const s = await src.read(scales, e * allRows * perRow, allRows * perRow);
        await write(toGgmlMxfp4(b, s, rows, perRow));
      }
    },
  });
  const even = Array.from({ length: I }, (_, i) => 2 * i);
  const odd = Array.from({ length: I }, (_, i) => 2 * i + 1);
  const all = Array.from({ length: H }, (_, i) => i);

  const tensors: GgufTensor[] = [copy(names.embedding, 'token_embd.weight', [H, V])];
  names.layers.forEach((l, n) => {
    const p = `blk.${n}`;
    // The projections' rows in order are Q, K, V: one fused matrix (HF's three are concatenated).
    const qkvSum = l.qkv.reduce((s, q) => s + q.rows, 0);
    if (qkvSum !== qkvRows) throw new Error(`gguf: QKV projections hold ${qkvSum} rows, expected ${qkvRows}`);
    tensors.push(
      f32([l.attnNorm], `${p}.attn_norm.weight`, [H]),
      {
        name: `${p}.attn_qkv.weight`,
        dims: [H, qkvRows],
        type: 'BF16',
        produce: async (write) => {
          for (const q of l.qkv) await copy(q.weight, '', []).produce(write);
        },
      },
      f32(
        l.qkv.map((q) => q.bias),
        `${p}.attn_qkv.bias`,
        [qkvRows],
      ),
      f32([l.sinks], `${p}.attn_sinks.weight`, [cfg.numHeads]),
      copy(l.outWeight, `${p}.attn_output.weight`, [cfg.numHeads * cfg.headDim, H]),
      f32([l.outBias], `${p}.attn_output.bias`, [H]),
      f32([l.mlpNorm], `${p}.post_attention_norm.weight`, [H]),
      f32([l.routerWeight], `${p}.ffn_gate_inp.weight`, [H, E]),
      f32([l.routerBias], `${p}.ffn_gate_inp.bias`, [E]),
      experts(l.mlp1Blocks, l.mlp1Scales, `${p}.ffn_gate_exps.weight`, H, 2 * I, even),
      f32([l.mlp1Bias], `${p}.ffn_gate_exps.bias`, [I, E], alternate(0)),
      experts(l.mlp1Blocks, l.mlp1Scales, `${p}.ffn_up_exps.weight`, H, 2 * I, odd),
      f32([l.mlp1Bias], `${p}.ffn_up_exps.bias`, [I, E], alternate(1)),
      experts(l.mlp2Blocks, l.mlp2Scales, `${p}.ffn_down_exps.weight`, I, H, all),
      f32([l.mlp2Bias], `${p}.ffn_down_exps.bias`, [H, E]),
    );
  });
  tensors.push(f32([names.norm], 'output_norm.weight', [H]), copy(names.unembedding, 'output.weight', [H, V]));
  try {
    const r = await writeGguf(path, gptOssMetadata(cfg, options.name ?? dir), tensors, options);
    return { bytes: r.bytes, config: cfg };
  } finally {
    await src.close();
  }
}
