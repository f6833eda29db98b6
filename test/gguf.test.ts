// One synthetic model, two engines (#21 item 2): createSyntheticModel's weights written as an
// original-layout checkpoint (lib/checkpoint/synthetic-files.ts) and as GGUF
// (lib/checkpoint/gguf.ts), then run by this engine and by llama.cpp through node-llama-cpp's
// prebuilt CPU binary (a devDependency; never built or downloaded, see benchmarks/llama-cpp.mjs).
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { getLlama, type Llama, LlamaLogLevel, type LlamaModel, readGgufFileInfo, type Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createSyntheticModel, getTokenizer, loadModel, type Model, presetConfig } from '../lib/index.js';
import type { ModelConfig } from '../lib/checkpoint/config.js';
import { ggmlBytes, toGgmlMxfp4, writeGptOssGguf } from '../lib/checkpoint/gguf.js';
import { fillSynthetic, writeSyntheticCheckpoint } from '../lib/checkpoint/synthetic-files.js';
import type { SyntheticTensorSpec } from '../lib/backend/native.js';
import { relErr, rng, tmpDir } from './helpers/checkpoint.js';
import { FP4 } from './helpers/reference.js';

/** A small gpt-oss over the real vocabulary: three layers (sliding, full, sliding), window 4. */
const small = (vocabSize: number): ModelConfig => ({
  ...presetConfig('20b', 3),
  hiddenSize: 128,
  intermediateSize: 64,
  numExperts: 4,
  expertsPerToken: 2,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize,
  slidingWindow: 4,
  layerWindows: [4, 0, 4],
});

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('synthetic models as files', () => {
  it('any byte range of a synthetic tensor is generated alone as within the whole', () => {
    // Chunks are 64 KiB; ranges start inside chunks and inside 8-byte draws.
    for (const kind of ['u8-uniform', 'u8-around', 'bf16-uniform', 'bf16-const'] as const) {
      const spec: SyntheticTensorSpec = {
        name: kind,
        kind,
        bytes: 3 * 65536 + 1234,
        seed: 99,
        a: kind === 'u8-around' ? 120 : 0.5,
      };
      const whole = new Uint8Array(spec.bytes);
      fillSynthetic(spec, 0, whole);
      for (const [from, to] of [
        [2, 65540],
        [65534, 131074],
        [131070, spec.bytes],
      ]) {
        const part = new Uint8Array(to - from);
        fillSynthetic(spec, from, part);
        expect(Buffer.compare(part, whole.subarray(from, to)), `${kind} [${from}, ${to})`).toBe(0);
      }
    }
  });

  it("a written synthetic checkpoint is createSyntheticModel's model, logits equal bit for bit", async () => {
    const cfg = small(1000);
    const dir = tmpDir();
    dirs.push(dir);
    await writeSyntheticCheckpoint(dir, cfg, 7);
    const tokens = [1, 5, 900, 33, 2, 7, 8, 9, 999, 0];
    const run = async (m: Model) => {
      const s = m.createSession({ maxContext: 16 });
      const out = await s.forward(tokens, { logits: 'all' });
      m.dispose();
      return out;
    };
    const fromFile = await run(await loadModel(dir));
    const inMemory = await run(await createSyntheticModel({ config: cfg, seed: 7 }));
    const otherSeed = await run(await createSyntheticModel({ config: cfg, seed: 8 }));
    expect(Buffer.compare(Buffer.from(fromFile.buffer), Buffer.from(inMemory.buffer))).toBe(0);
    expect(relErr(otherSeed, inMemory)).toBeGreaterThan(0.5);
  }, 30_000);
});

describe('GGUF', () => {
  it("MXFP4 blocks in ggml's layout hold the checkpoint's values", () => {
    // ggml (ggml-common.h, ggml-quants.c): block {e, qs[16]}; element j < 16 is qs[j]'s low nibble,
    // j + 16 its high one; value = kvalues (twice E2M1) x 2^(e - 128).
    const r = rng(5);
    const rows = 3,
      K = 64,
      perRow = K / 32;
    const blocks = Uint8Array.from({ length: rows * perRow * 16 }, () => Math.floor(r() * 256));
    const scales = Uint8Array.from({ length: rows * perRow }, () => 100 + Math.floor(r() * 40));
    const kvalues = FP4.map((v) => 2 * v);
    const out = toGgmlMxfp4(blocks, scales, [2, 0], perRow);
    expect(out.length).toBe(ggmlBytes('MXFP4', 2 * K));
    [2, 0].forEach((row, i) => {
      for (let g = 0; g < perRow; g++) {
        const b = out.subarray((i * perRow + g) * 17, (i * perRow + g + 1) * 17);
        for (let j = 0; j < 32; j++) {
          const nibble = j < 16 ? b[1 + j] & 15 : b[1 + j - 16] >> 4;
          const ggml = kvalues[nibble] * 2 ** (b[0] - 128);
          // The checkpoint (gpt-oss-spec §3): byte k holds elements 2k (low nibble) and 2k + 1.
          const byte = blocks[(row * perRow + g) * 16 + (j >> 1)];
          const ckpt = FP4[(byte >> ((j & 1) * 4)) & 15] * 2 ** (scales[row * perRow + g] - 127);
          expect(ggml).toBe(ckpt);
        }
      }
    });
  });

  // package.json keeps node-llama-cpp's prebuilt CPU binaries for Linux only (the others are not
  // on the registry these machines reach, so their packages are overridden by an empty one).
  const prebuilt = ['linux-x64', 'linux-arm64', 'linux-arm'].includes(`${process.platform}-${process.arch}`);
  describe.skipIf(!prebuilt)('a small real-vocabulary model in both engines (Linux: llama.cpp prebuilt)', () => {
    let llama: Llama;
    beforeAll(async () => {
      // The prebuilt CPU binary only: no GPU probing, no source download, no build.
      llama = await getLlama({
        gpu: false,
        build: 'never',
        skipDownload: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.error,
      });
    });
    afterAll(async () => {
      await llama?.dispose();
    });

    /** Writes the model both ways; loads the GGUF into llama.cpp. */
    const bothWays = async (cfg: ModelConfig, seed: number) => {
      const dir = tmpDir();
      dirs.push(dir);
      await writeSyntheticCheckpoint(dir, cfg, seed);
      const gguf = join(dir, 'model.gguf');
      await writeGptOssGguf(dir, gguf, { name: 'synthetic test model' });
      return { dir, gguf, lmodel: await llama.loadModel({ modelPath: gguf, gpuLayers: 0 }) };
    };

    /** Per position: llama.cpp's logits against ours, and against another model's (seed + 1). */
    const compare = async (cfg: ModelConfig, seed: number, dir: string, lmodel: LlamaModel, prompt: number[]) => {
      const ctx = await lmodel.createContext({ contextSize: 64, batchSize: 64, threads: 2 });
      const theirs = await ctx
        .getSequence()
        .controlledEvaluate(
          prompt.map((t): [Token, { generateNext: { logits: true } }] => [
            t as Token,
            { generateNext: { logits: true } },
          ]),
        );
      await ctx.dispose();
      const V = cfg.vocabSize;
      const ours = await loadModel(dir);
      const other = await createSyntheticModel({ config: cfg, seed: seed + 1 });
      try {
        const mine = await ours.createSession({ maxContext: 32 }).forward(prompt, { logits: 'all' });
        const wrong = await other.createSession({ maxContext: 32 }).forward(prompt, { logits: 'all' });
        const argmax = (x: ArrayLike<number>) => {
          let best = 0;
          for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
          return best;
        };
        return prompt.map((_, p) => {
          const a = new Float32Array(V);
          for (const [t, v] of theirs[p]!.next.logits!) a[t] = v;
          const b = mine.subarray(p * V, (p + 1) * V);
          return {
            err: relErr(a, b),
            otherErr: relErr(a, wrong.subarray(p * V, (p + 1) * V)),
            sameArgmax: argmax(a) === argmax(b),
          };
        });
      } finally {
        ours.dispose();
        other.dispose();
      }
    };
    const show = (r: { err: number }[]) => `relative errors by position: ${r.map((x) => x.err.toFixed(3)).join(' ')}`;

    // llama.cpp rounds the experts' inputs to 8 bits (q8_0) and the bf16 matmuls' to bf16, and
    // truncates YaRN's ramp bounds: the issue measured 2-7% relative error on gpt-oss-20b; these
    // small models show 1-3.5%. A different model (the next seed) is off by more than 50%.
    const BOUND = 0.05;
    const prompt = [13225, 2375, 11, 495, 382, 261, 1746, 13, 1328, 1069, 7, 1428, 5, 900, 150000, 200007];

    it("with every expert used, llama.cpp's logits are ours within its rounding at every position", async () => {
      // Top-4 of 4 experts: no routing decision that a rounding difference could flip, so every
      // position must agree (nibble order, gate/up split, biases, sinks, windows, RoPE).
      const cfg = { ...small(201088), expertsPerToken: 4 };
      const { dir, lmodel } = await bothWays(cfg, 11);
      try {
        const r = await compare(cfg, 11, dir, lmodel, prompt);
        expect(Math.max(...r.map((x) => x.err)), show(r)).toBeLessThan(BOUND);
        expect(Math.min(...r.map((x) => x.otherErr))).toBeGreaterThan(0.5);
        expect(r.filter((x) => x.sameArgmax).length).toBeGreaterThanOrEqual(Math.ceil(0.8 * prompt.length));
      } finally {
        await lmodel.dispose();
      }
    }, 60_000);

    describe('top-2 of 4 experts', () => {
      const cfg = small(201088);
      let dir: string;
      let gguf: string;
      let lmodel: LlamaModel;
      beforeAll(async () => {
        ({ dir, gguf, lmodel } = await bothWays(cfg, 3));
      }, 60_000);
      afterAll(async () => {
        await lmodel?.dispose();
      });

      it("holds the metadata and tensors llama.cpp's gpt-oss loader reads", async () => {
        const info = await readGgufFileInfo(gguf, { readTensorInfo: true });
        const m = info.metadata as unknown as Record<string, Record<string, unknown>>;
        expect(m.general.architecture).toBe('gpt-oss');
        expect(m['gpt-oss']).toMatchObject({
          block_count: 3,
          embedding_length: 128,
          expert_count: 4,
          expert_used_count: 2,
          expert_feed_forward_length: 64,
          attention: { head_count: 4, head_count_kv: 2, key_length: 64, value_length: 64, sliding_window: 4 },
          rope: {
            dimension_count: 64,
            freq_base: 150000,
            scaling: { type: 'yarn', factor: 32, original_context_length: 4096, yarn_beta_fast: 32, yarn_beta_slow: 1 },
          },
        });
        const tensors = new Map(info.tensorInfo!.map((t) => [t.name, t]));
        // 3 global + 15 per layer, nothing else (llama.cpp refuses unused tensors).
        expect(tensors.size).toBe(3 + 15 * 3);
        const F32 = 0,
          BF16 = 30,
          MXFP4 = 39;
        const has = (name: string, dims: number[], type: number) => {
          const t = tensors.get(name);
          expect(t, name).toBeDefined();
          expect(t!.dimensions.map(Number), name).toEqual(dims);
          expect(t!.ggmlType, name).toBe(type);
          expect(Number(t!.offset) % 32, name).toBe(0);
        };
        has('token_embd.weight', [128, 201088], BF16);
        has('output.weight', [128, 201088], BF16);
        has('output_norm.weight', [128], F32);
        has('blk.1.attn_qkv.weight', [128, (4 + 2 * 2) * 64], BF16);
        has('blk.1.attn_qkv.bias', [(4 + 2 * 2) * 64], F32);
        has('blk.1.attn_sinks.weight', [4], F32);
        has('blk.1.attn_output.weight', [256, 128], BF16);
        has('blk.1.post_attention_norm.weight', [128], F32);
        has('blk.1.ffn_gate_inp.weight', [128, 4], F32);
        has('blk.1.ffn_gate_exps.weight', [128, 64, 4], MXFP4);
        has('blk.1.ffn_up_exps.weight', [128, 64, 4], MXFP4);
        has('blk.1.ffn_down_exps.weight', [64, 128, 4], MXFP4);
        has('blk.1.ffn_up_exps.bias', [64, 4], F32);
        const last = [...tensors.values()].sort((a, b) => Number(b.offset) - Number(a.offset))[0];
        expect(statSync(gguf).size).toBe(Number(last.fileOffset) + ggmlBytes('BF16', 128 * 201088));
      });

      it('llama.cpp tokenizes text as our o200k_harmony tokenizer does', async () => {
        const text = "Hello world, it's 2025!\n\n  Ünïcödé, 漢字 and   spaces\tand emoji 🙂 done.\r\n";
        expect(Array.from(lmodel.tokenize(text))).toEqual(getTokenizer().encode(text));
      });

      it("llama.cpp's logits are ours within its rounding, but for expert choices it flips", async () => {
        // A router logit within llama.cpp's rounding of the next one can pick another expert
        // (about 1 in 50 choices here), and attention carries that to later positions; on this
        // prompt none flips on the machines tried, so most positions must be within the bound.
        const r = await compare(cfg, 3, dir, lmodel, prompt);
        expect(r.filter((x) => x.err < BOUND).length, show(r)).toBeGreaterThanOrEqual(Math.ceil(0.75 * prompt.length));
        expect(Math.min(...r.map((x) => x.otherErr))).toBeGreaterThan(0.5);
      }, 60_000);
    });
  });
});
