// The CUDA backend (native/cuda) behind the backend interface, on whatever build runs it: under
// test/cuda-emu.sh the emulated build (GPTOSS_CUDA=emulate), where the kernel lab's emulator plays
// the GPU and replays captured graphs; skipped in a build without the CUDA backend.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

import { runCheck } from '../lib/cli/check.js';
import { addon, packageRoot, type NativeProgram, type ProgramSpec } from '../lib/backend/native.js';
import type { OpSpec } from '../lib/backend/ops.js';
import { bf16Bytes, fixtures, rng } from './helpers/checkpoint.js';
import { usableDevice } from './helpers/op.js';

const hasCuda = usableDevice('cuda');
const Hq = 4,
  Hkv = 2,
  D = 64,
  cap = 40;

// One layer's attention over a cache written from JS: each step is one decode token at the next
// position, so every step has the same shape (one captured graph) and different inputs.
function attentionSpec(device: 'cpu' | 'cuda', sinks: number, window: number): ProgramSpec {
  const ops: OpSpec[] = [
    {
      op: 'attention',
      x: 0 as never,
      y: 1 as never,
      kc: 2 as never,
      vc: 3 as never,
      w: sinks as never,
      qHeads: Hq,
      kvHeads: Hkv,
      headDim: D,
      window,
      scale: 0.125,
    },
  ];
  return {
    device,
    precision: 'fp32',
    maxTokens: 1,
    maxContext: cap,
    rope: { theta: 150000, factor: 32, ntkAlpha: 1, ntkBeta: 32, initialContext: 4096, headDim: D },
    buffers: [
      { dtype: 'f32', rows: 1, cols: Hq * D },
      { dtype: 'f32', rows: 1, cols: Hq * D },
      { dtype: 'f32', rows: cap, cols: Hkv * D },
      { dtype: 'f32', rows: cap, cols: Hkv * D },
    ],
    ops,
  };
}

async function decode(
  program: NativeProgram,
  qs: Float32Array[],
  kc: Float32Array,
  vc: Float32Array,
  pageSize: number,
): Promise<Float32Array[]> {
  program.writeBuffer(2, kc);
  program.writeBuffer(3, vc);
  const out: Float32Array[] = [];
  const page = {
    table: Int32Array.from({ length: cap / pageSize }, (_, i) => cap / pageSize - 1 - i),
    ring: cap / pageSize,
    pageSize,
  };
  for (let p = 0; p < qs.length; p++) {
    program.writeBuffer(0, qs[p]);
    await program.step({
      tokens: Int32Array.of(0),
      positions: Int32Array.of(p + 3),
      seqs: Int32Array.of(0),
      full: page,
      sliding: page,
      logitRows: new Int32Array(0),
      out: null,
    });
    const b = program.readBuffer(1);
    out.push(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
  }
  return out;
}

describe.skipIf(!hasCuda)('CUDA backend (cuda)', () => {
  it('reports itself: emulated in the emulated build, and the ops it has kernels for', () => {
    const info = addon().deviceInfo().cuda;
    expect(info.built).toBe(true);
    expect(info.available).toBe(true);
    if (process.env.GPTOSS_CUDA === 'emulate') {
      expect(info.emulated).toBe(true);
      expect(info.name).toMatch(/emulator/);
    }
    expect(addon().deviceOps.cuda).toEqual(expect.arrayContaining(['rmsnorm', 'moe_combine']));
  });

  // The lab's schedules for the engine's launches (as `GPTOSS_CUDA_EMU_SCHEDULE=tickets gptoss check
  // --device cuda`); read when the device opens, so each value gets a process of its own.
  it.skipIf(process.env.GPTOSS_CUDA !== 'emulate')(
    "GPTOSS_CUDA_EMU_SCHEDULE sets the emulator's schedule, and a name it does not know is the device's error",
    () => {
      const cudaInfo = (schedule: string) => {
        const path = process.env.GPTOSS_ADDON ?? `${packageRoot}build-cuda-emu-addon/Release/gptoss.node`;
        const script = `console.log(JSON.stringify(require(${JSON.stringify(path)}).deviceInfo().cuda))`;
        const r = spawnSync(process.execPath, ['-e', script], {
          env: { ...process.env, GPTOSS_CUDA_EMU_SCHEDULE: schedule },
          encoding: 'utf8',
        });
        expect(r.status, r.stderr).toBe(0);
        return JSON.parse(r.stdout) as { available: boolean; name?: string; error?: string };
      };
      expect(cudaInfo('tickets').name).toMatch(/schedule tickets(, blocks one at a time: a GCC build)?\)$/);
      expect(cudaInfo('random:7').name).toMatch(/schedule random(, blocks one at a time: a GCC build)?\)$/);
      expect(cudaInfo('').name).toMatch(/schedule forward(, blocks one at a time: a GCC build)?\)$/);
      const bad = cudaInfo('sideways');
      expect(bad.available).toBe(false);
      expect(bad.error).toMatch(/GPTOSS_CUDA_EMU_SCHEDULE is 'sideways'; it must be forward, reverse, tickets, random/);
    },
  );

  it.skipIf(!(addon().deviceOps.cuda ?? []).includes('attention'))(
    "a decode step replayed from its captured graph reads each step's positions and page table, bit for bit as run eagerly, and matches the CPU",
    async () => {
      const r = rng(17);
      const { Weights, Program } = addon();
      const weights = new Weights();
      const sinks = weights.addBytes(bf16Bytes([0.5, -1, 3, 0]), 'sinks');
      const kc = Float32Array.from({ length: cap * Hkv * D }, () => 2 * r() - 1);
      const vc = Float32Array.from({ length: cap * Hkv * D }, () => 2 * r() - 1);
      const qs = Array.from({ length: 6 }, () => Float32Array.from({ length: Hq * D }, () => 2 * r() - 1));
      try {
        for (const window of [0, 5]) {
          const run = async (device: 'cpu' | 'cuda', pageSize: number) => {
            const p = new Program(weights, attentionSpec(device, sinks, window));
            try {
              return await decode(p, qs, kc, vc, pageSize);
            } finally {
              p.dispose();
            }
          };
          const cpu = await run('cpu', 8);
          const graphed = await run('cuda', 8);
          process.env.GPTOSS_CUDA_GRAPHS = '0';
          const eager = await run('cuda', 8).finally(() => delete process.env.GPTOSS_CUDA_GRAPHS);
          // Another page size is another graph (and other rows of the cache).
          const cpu4 = await run('cpu', 4);
          const other = await run('cuda', 4);
          const close = (a: Float32Array, b: Float32Array) => {
            let err = 0;
            for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
            return err;
          };
          for (let s = 0; s < qs.length; s++) {
            expect(graphed[s]).toEqual(eager[s]);
            expect(close(graphed[s], cpu[s])).toBeLessThan(1e-5);
            expect(close(other[s], cpu4[s])).toBeLessThan(1e-5);
          }
          // Steps differ (the replay did not return the first step's result again).
          expect(graphed[1]).not.toEqual(graphed[0]);
        }
      } finally {
        weights.dispose();
      }
    },
  );

  const missing = ['embed', 'rope', 'kv_append', 'matmul_bf16', 'attention', 'router_topk', 'moe_mxfp4'].filter(
    (op) => !(addon().deviceOps.cuda ?? []).includes(op),
  );
  it.skipIf(missing.length === 0)(
    'a program with an op whose CUDA kernel this build lacks is refused with ERR_UNSUPPORTED naming it',
    () => {
      const { Weights, Program } = addon();
      const weights = new Weights();
      try {
        const op = missing[0];
        const ops: Record<string, OpSpec> = {
          embed: { op: 'embed', w: weights.addBytes(new Uint8Array(8 * 64 * 2), 'table'), y: 0 as never, H: 64 },
          rope: { op: 'rope', x: 0 as never, qHeads: 1, kvHeads: 0, headDim: 64 },
        };
        const spec = attentionSpec('cuda', weights.addBytes(bf16Bytes([0, 0, 0, 0]), 'sinks'), 0);
        spec.ops = [ops[op] ?? spec.ops[0]];
        if (!ops[op]) return; // only embed and rope are built here; the others need more setup
        expect(() => new Program(weights, spec)).toThrow(
          expect.objectContaining({ code: 'ERR_UNSUPPORTED', message: expect.stringContaining(op) }),
        );
      } finally {
        weights.dispose();
      }
    },
  );

  // A checkpoint's weights go to the device on a worker thread (weights.upload, which loadModel
  // awaits): the event loop keeps turning while 128 MB are staged and copied, instead of
  // stopping for the whole copy inside the first program's constructor.
  it('uploads the weights off the JS thread: the event loop turns during the copy', async () => {
    const { Weights } = addon();
    const weights = new Weights();
    try {
      await weights.addSynthetic([{ name: 'big', kind: 'u8-uniform', bytes: 128 * 2 ** 20, seed: 1, a: 0 }]);
      let ticks = 0,
        longest = 0,
        last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        longest = Math.max(longest, now - last);
        last = now;
        ticks++;
      }, 1);
      const t0 = performance.now();
      await weights.upload('cuda');
      const took = performance.now() - t0;
      clearInterval(timer);
      expect(took).toBeGreaterThan(20); // long enough for a stall to show
      expect(ticks).toBeGreaterThan(2);
      expect(longest).toBeLessThan(took / 2);
    } finally {
      weights.dispose();
    }
  });

  // The runner's own device buffers (the sampler's scratch, candidates and chunk sums; the router's
  // tickets) are in the memory plan, so a model that cannot also hold them is refused up front.
  it("a program's memory plan counts the device sampler's buffers, on CUDA only", () => {
    const V = 201088;
    const plan = (device: 'cpu' | 'cuda', maxTokens: number) =>
      addon().planMemory({ ...attentionSpec(device, 0, 0), maxTokens }, V);
    for (const T of [1, 8, 64]) {
      const m = plan('cuda', T);
      const rows = Math.min(32, T);
      // scratch rows x (V f32, 197 chunks' 16 f32 lane sums, 25 slices' lists of 2,048 8-byte
      // candidates and 24-byte records, a ticket), their 104-byte results, 2,048 8-byte candidates,
      // 197 chunk sums and a zeroed ticket each, T tickets
      const perRow = V * 4 + 197 * 16 * 4 + 25 * (2048 * 8 + 24) + 4 + 104 + 2048 * 8 + 197 * 8 + 4;
      expect(m.runner).toBeGreaterThanOrEqual(rows * perRow + T * 4);
      expect(m.runner).toBeLessThan(rows * perRow + T * 4 + 256);
      expect(m.arena).toBe(m.activations + m.scratch + m.logits + m.runner);
    }
    expect(plan('cpu', 8).runner).toBe(0);
  });

  // The engine's step budget on CUDA (2048 tokens by default) must not blow up the arena: the
  // device logits are planned for the rows a step may ask for (maxLogitRows: the engine's one per
  // sequence), and the decode attention's partials are capped (kAttentionScratchCapBytes: longer
  // steps run in launches of as many tokens as they hold).
  it("the arena at a large step budget: logits for maxLogitRows rows, the decode attention's scratch capped", async () => {
    const V = 201088;
    const big = { ...attentionSpec('cuda', 0, 0), maxTokens: 2048, maxContext: 131072 };
    const all = addon().planMemory(big, V);
    const some = addon().planMemory({ ...big, maxLogitRows: 16 }, V);
    expect(all.logits).toBe(2048 * V * 4);
    expect(some.logits).toBe(16 * V * 4);
    expect(some.arena).toBe(all.arena - (2048 - 16) * V * 4);
    // Per token: 1,024 splits of 128 keys x 4 heads x (64 + 2) floats; 2,048 tokens' worth would be 2.2 GB.
    const perToken = 1024 * Hq * (D + 2) * 4;
    expect(all.scratch).toBeLessThanOrEqual(256 * 2 ** 20);
    expect(all.scratch).toBeGreaterThanOrEqual(Math.floor((256 * 2 ** 20) / perToken) * perToken);
    const { Weights, Program } = addon();
    const weights = new Weights();
    try {
      const spec = attentionSpec('cuda', weights.addBytes(bf16Bytes([0, 0, 0, 0]), 'sinks'), 0);
      for (const maxLogitRows of [0, 2])
        expect(() => new Program(weights, { ...spec, maxLogitRows })).toThrow(
          expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
        );
    } finally {
      weights.dispose();
    }
  });

  // The MLP's norm, router and top-k are one fused launch below router_topk_use_gemm's size
  // (kernels/cuda/router_topk.cuh: T x E >= 5120 up to 64 tokens, >= 12288 past 64, where the GEMM
  // takes its wide tile); from there, in default mode, the norm, the router's GEMM (which reads the
  // weights once, where the fused launch streams them once per token) and the top-k launch; fp32
  // mode stays fused. Either way the experts are the top-k of the logits the step wrote (ties to
  // the lower index) with the softmax over them, and the logits are the CPU's within the GEMM's
  // bf16 rounding of its input.
  it.each([
    [32, 383, 384],
    [128, 39, 40],
  ])(
    'the router of %i experts takes its own GEMM from %i + 1 tokens in default mode: 3 launches for 1, the top-k of its logits',
    async (E, below, from) => {
      const H = 64,
        k = 4;
      const r = rng(18);
      const { Weights, Program } = addon();
      const weights = new Weights();
      const gain = weights.addBytes(bf16Bytes(Array.from({ length: H }, () => 0.5 + r())), 'gain');
      const w = weights.addBytes(bf16Bytes(Array.from({ length: E * H }, () => r() - 0.5)), 'w');
      const b = weights.addBytes(bf16Bytes(Array.from({ length: E }, () => 0.2 * (r() - 0.5))), 'b');
      const run = async (device: 'cpu' | 'cuda', precision: 'fp32' | 'default', T: number, x: Float32Array) => {
        const program = new Program(weights, {
          device,
          precision,
          maxTokens: T,
          maxContext: T,
          rope: { theta: 150000, factor: 32, ntkAlpha: 1, ntkBeta: 32, initialContext: 4096, headDim: D },
          buffers: [
            { dtype: 'f32', rows: T, cols: H },
            { dtype: 'f32', rows: T, cols: H },
            { dtype: 'f32', rows: T, cols: E },
            { dtype: 'i32', rows: T, cols: k },
            { dtype: 'f32', rows: T, cols: k },
          ],
          ops: [
            { op: 'rmsnorm', x: 0 as never, y: 1 as never, w: gain, H, eps: 1e-5 },
            { op: 'matmul_bf16', x: 1 as never, y: 2 as never, w, b, N: E, K: H },
            { op: 'router_topk', x: 2 as never, idx: 3 as never, wt: 4 as never, E, k },
          ],
        });
        try {
          program.writeBuffer(0, x);
          const page = { table: Int32Array.of(0), ring: 1, pageSize: 1 };
          await program.step({
            tokens: new Int32Array(T),
            positions: Int32Array.from({ length: T }, (_, i) => i),
            seqs: new Int32Array(T),
            full: page,
            sliding: page,
            logitRows: new Int32Array(0),
            out: null,
          });
          const read = (i: number) => program.readBuffer(i).slice().buffer;
          return {
            logits: new Float32Array(read(2)),
            idx: new Int32Array(read(3)),
            wt: new Float32Array(read(4)),
            launches: program.transfers.stepLaunches,
          };
        } finally {
          program.dispose();
        }
      };
      try {
        for (const [T, precision, launches] of [
          [below, 'default', 1],
          [from, 'default', 3],
          [from, 'fp32', 1],
        ] as const) {
          const x = Float32Array.from({ length: T * H }, () => 4 * (r() - 0.5));
          const got = await run('cuda', precision, T, x);
          const cpu = await run('cpu', precision, T, x);
          expect(got.launches).toBe(launches);
          let num = 0,
            den = 0;
          for (let i = 0; i < T * E; i++) {
            num += (got.logits[i] - cpu.logits[i]) ** 2;
            den += cpu.logits[i] ** 2;
          }
          expect(Math.sqrt(num / den)).toBeLessThan(precision === 'fp32' ? 1e-5 : 1e-2);
          for (let t = 0; t < T; t++) {
            const row = Array.from(got.logits.subarray(t * E, (t + 1) * E));
            const want = row
              .map((v, e) => [v, e])
              .sort((p, q) => q[0] - p[0] || p[1] - q[1])
              .slice(0, k)
              .map(([, e]) => e);
            expect(Array.from(got.idx.subarray(t * k, (t + 1) * k))).toEqual(want);
            const ex = want.map((e) => Math.exp(row[e] - row[want[0]]));
            const sum = ex.reduce((a, c) => a + c);
            ex.forEach((v, j) => expect(got.wt[t * k + j]).toBeCloseTo(v / sum, 5));
          }
        }
      } finally {
        weights.dispose();
      }
    },
  );

  it('running out of device memory is ERR_OUT_OF_MEMORY, and the device stays usable', async () => {
    const { Weights, Program } = addon();
    const weights = new Weights();
    const g = weights.addBytes(bf16Bytes(Array.from({ length: 64 }, () => 1)), 'g');
    const spec = (rows: number): ProgramSpec => ({
      device: 'cuda',
      precision: 'fp32',
      maxTokens: rows,
      maxContext: 1,
      rope: { theta: 150000, factor: 32, ntkAlpha: 1, ntkBeta: 32, initialContext: 4096, headDim: 64 },
      buffers: [
        { dtype: 'f32', rows, cols: 1 << 20 },
        { dtype: 'f32', rows, cols: 64 },
      ],
      ops: [{ op: 'rmsnorm', x: 1 as never, y: 1 as never, w: g, H: 64, eps: 1e-5 }],
    });
    try {
      // 2^30 rows of 4 MiB: more than any device (and the emulated one's cap) holds.
      expect(() => new Program(weights, spec(1 << 30))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_MEMORY' }));
      const p = new Program(weights, spec(1));
      p.writeBuffer(
        1,
        Float32Array.from({ length: 64 }, (_, i) => i + 1),
      );
      const page = { table: Int32Array.of(0), ring: 1, pageSize: 1 };
      await p.step({
        tokens: Int32Array.of(0),
        positions: Int32Array.of(0),
        seqs: Int32Array.of(0),
        full: page,
        sliding: page,
        logitRows: new Int32Array(0),
        out: null,
      });
      const y = new Float32Array(p.readBuffer(1).slice().buffer);
      expect(y[0]).toBeGreaterThan(0);
      p.dispose();
    } finally {
      weights.dispose();
    }
  });

  // A 40-token prompt is prefill-shaped (16 or more tokens of one sequence): its projections run on
  // the tensor-core GEMM and its attention on the tensor-core prefill kernel, in one piece and in
  // two chunks; token by token everything runs on the decode kernels. In fp32 mode (split hi + lo
  // bf16 GEMM, f32 cache and MXFP4 products) all three are within check's 1e-3 of the reference
  // and of each other; in default mode within 1e-2 of the reference, the two prefills within 1e-2
  // of each other (the same kernels), and decode within 2e-2 of the one-piece prefill: different
  // kernels, each within 1e-2 of the reference (triangle inequality), both rounding Q and the
  // softmax weights to bf16 in attention. Measured (emulated, commit f6bbeb0): whole 9.2e-3 and
  // decode 4.3e-3 from the reference, 1.0e-2 from each other (8.6e-3 with decode attention's
  // f32 products before).
  for (const mode of ['fp32', 'default'] as const) {
    it.skipIf(missing.length > 0)(
      `tiny-b's 40-token case (${mode} mode): one-piece and chunked prefill on the tensor-core kernels and token-by-token decode agree with the reference`,
      async () => {
        const { loadModel } = await import('../lib/index.js');
        const { readFileSync } = await import('node:fs');
        const { join } = await import('node:path');
        const { relErr } = await import('./helpers/checkpoint.js');
        const tol = mode === 'fp32' ? 1e-3 : 1e-2;
        const dir = join(fixtures, 'tiny-b');
        const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as {
          cases: { name: string; tokens: number[]; logits_fp32: string }[];
        };
        const seq40 = cases.cases.find((c) => c.name === 'seq40')!;
        expect(seq40.tokens.length).toBe(40);
        const ref = new Float32Array(readFileSync(join(dir, seq40.logits_fp32)).buffer.slice(0));
        const model = await loadModel(join(dir, 'hf'), { device: 'cuda', mode });
        try {
          const V = model.config.vocabSize;
          const whole = await model.createSession().forward(seq40.tokens);
          expect(relErr(whole, ref)).toBeLessThan(tol);
          const chunked = model.createSession();
          const first = await chunked.forward(seq40.tokens.slice(0, 24));
          const second = await chunked.forward(seq40.tokens.slice(24));
          const both = new Float32Array(40 * V);
          both.set(first, 0);
          both.set(second, 24 * V);
          expect(relErr(both, ref)).toBeLessThan(tol);
          expect(relErr(both, whole)).toBeLessThan(tol);
          const session = model.createSession();
          const decode = new Float32Array(40 * V);
          for (let i = 0; i < 40; i++) decode.set(await session.forward([seq40.tokens[i]], { logits: 'last' }), i * V);
          expect(relErr(decode, ref)).toBeLessThan(tol);
          expect(relErr(decode, whole)).toBeLessThan(mode === 'fp32' ? tol : 2 * tol);
        } finally {
          model.dispose();
        }
      },
    );
  }

  // The engine's continuous batching on the CUDA backend: six requests sharing steps get exactly
  // what each gets alone. In fp32 mode with steps under 16 tokens every op stays on its per-row
  // kernel (GEMV, decode attention, the f32 MXFP4 GEMV), whose result for a row does not depend on
  // the others; in default mode the grouped MXFP4 GEMM takes steps with 3+ tokens per expert, so a
  // row's rounding (and a sampled token) can change with what it is batched with.
  it.skipIf(missing.length > 0)(
    'the engine batches requests on the cuda backend, each getting exactly its solo tokens (fp32 mode, greedy and seeded)',
    async () => {
      const { loadModel, createEngine } = await import('../lib/index.js');
      const { join } = await import('node:path');
      const model = await loadModel(join(fixtures, 'tiny-b', 'hf'), { device: 'cuda', mode: 'fp32' });
      try {
        const V = model.config.vocabSize;
        const prompt = (i: number) => Array.from({ length: 3 + ((i * 5) % 11) }, (_, j) => (i * 101 + j * 31) % V);
        const opts = (i: number) => (i % 2 ? { temperature: 0 } : { seed: i, topP: 0.9 });
        const alone: number[][] = [];
        for (let i = 0; i < 6; i++)
          alone.push((await model.complete(prompt(i), { maxTokens: 10, stopTokens: [], ...opts(i) }).result()).tokens);
        const engine = await createEngine({ model, maxSequences: 6, maxBatchTokens: 15, pageSize: 4 });
        const together = await Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            engine.complete(prompt(i), { maxTokens: 10, stopTokens: [], ...opts(i) }).result(),
          ),
        );
        together.forEach((r, i) => expect(r.tokens).toEqual(alone[i]));
        expect(engine.stats().steps).toBeLessThan(30); // 60 tokens alone would be 60 steps
        expect(engine.stats().kvPagesUsed).toBe(0);
        await engine.close();
      } finally {
        model.dispose();
      }
    },
  );

  // On CUDA the engine's default step budget is 2048 tokens (every step reads the experts' weights
  // again, so a long prompt goes fastest in few large steps); a 300-token prompt runs in one step.
  it.skipIf(missing.length > 0)('an engine on CUDA takes steps of up to 2048 tokens by default', async () => {
    const { loadModel, createEngine } = await import('../lib/index.js');
    const { join } = await import('node:path');
    const model = await loadModel(join(fixtures, 'tiny-b', 'hf'), { device: 'cuda' });
    try {
      const engine = await createEngine({ model, maxSequences: 2, maxContext: 512 });
      expect(engine.maxBatchTokens).toBe(2048);
      const prompt = Array.from({ length: 300 }, (_, j) => (j * 31 + 7) % model.config.vocabSize);
      const r = await engine.complete(prompt, { maxTokens: 2, temperature: 0, stopTokens: [] }).result();
      expect(r.tokens).toHaveLength(2);
      expect(engine.stats().steps).toBe(2); // the prompt in one step, then one decode
      await engine.close();
    } finally {
      model.dispose();
    }
  });

  // A 300-token prompt in one step takes the 128-row tiles of both tensor-core GEMMs: the bf16
  // GEMM's 128 x 256 tile (QKV, the attention output) and the grouped MXFP4 GEMM's 128-row m-tile
  // (tiny-b: 150 slots per expert), each on wgmma where the device is compute capability 9.0, as
  // the emulator reports. Default mode's last-position logits agree with the CPU's (fp32) within
  // its 1e-2.
  it.skipIf(missing.length > 0)(
    "a 300-token prompt on the 128-row tiles (wgmma on the emulator's 9.0) gives the CPU's logits within default mode's bound",
    async () => {
      const { loadModel } = await import('../lib/index.js');
      const { join } = await import('node:path');
      const { relErr } = await import('./helpers/checkpoint.js');
      const dir = join(fixtures, 'tiny-b', 'hf');
      const cpu = await loadModel(dir, { device: 'cpu', mode: 'fp32' });
      const prompt = Array.from({ length: 300 }, (_, j) => (j * 31 + 7) % cpu.config.vocabSize);
      let want: Float32Array;
      try {
        want = await cpu.createSession().forward(prompt, { logits: 'last' });
      } finally {
        cpu.dispose();
      }
      const model = await loadModel(dir, { device: 'cuda', mode: 'default' });
      try {
        const got = await model.createSession().forward(prompt, { logits: 'last' });
        expect(got.length).toBe(want.length);
        expect(relErr(got, want)).toBeLessThan(1e-2);
      } finally {
        model.dispose();
      }
    },
  );

  // The backend folds each norm into the GEMV after it (and the MLP's router top-k too), and launches
  // rope + KV append and the experts + their combine as one fused kernel each (launch_fused in
  // native/cuda/backend.cc); GPTOSS_CUDA_FUSE=0, read when a program is made, launches every op
  // alone. Decode gives the same bits either way; a prefill (the router's f32 GEMV against the
  // unfused bf16 GEMM, the grouped GEMM's fused combine) stays within rounding of the unfused one.
  it.skipIf(missing.length > 0)('fused launches give what the ops give one by one (decode bit for bit)', async () => {
    const { loadModel } = await import('../lib/index.js');
    const { readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { relErr } = await import('./helpers/checkpoint.js');
    const dir = join(fixtures, 'tiny-b');
    const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as {
      cases: { name: string; tokens: number[] }[];
    };
    const tokens = cases.cases.find((c) => c.name === 'seq40')!.tokens;
    const run = async (fuse: boolean) => {
      if (fuse) delete process.env.GPTOSS_CUDA_FUSE;
      else process.env.GPTOSS_CUDA_FUSE = '0';
      const model = await loadModel(join(dir, 'hf'), { device: 'cuda' });
      try {
        const prefill = await model.createSession().forward(tokens);
        const s = model.createSession();
        const decode: number[] = [];
        for (const t of tokens.slice(0, 6)) decode.push(...(await s.forward([t], { logits: 'last' })));
        // One decode step on a program of its own: the kernel launches (graph nodes) it makes.
        const program = model.createPagedProgram({ maxTokens: 4, fullRows: 16, slidingRows: 16 });
        try {
          const table = { table: Int32Array.of(0), ring: 1, pageSize: 16 };
          await program.step({
            tokens: Int32Array.of(tokens[0]),
            positions: Int32Array.of(0),
            seqs: Int32Array.of(0),
            full: table,
            sliding: table,
            logitRows: Int32Array.of(0),
            out: new Float32Array(model.config.vocabSize),
          });
          return { prefill, decode: Float32Array.from(decode), launches: program.transfers.stepLaunches };
        } finally {
          program.dispose();
        }
      } finally {
        model.dispose();
        delete process.env.GPTOSS_CUDA_FUSE;
      }
    };
    const fused = await run(true);
    const alone = await run(false);
    expect(Buffer.from(fused.decode.buffer).equals(Buffer.from(alone.decode.buffer))).toBe(true);
    // A 40-token prefill: the fused router takes f32 products where the unfused router's GEMM (from
    // 16 tokens) rounds its activations to bf16, so the two agree within default mode's rounding
    // (each is held to the reference by the 40-token tests above).
    expect(relErr(fused.prefill, alone.prefill)).toBeLessThan(2e-2);
    // Per layer, five launches fewer: the attention's norm folded into the QKV GEMV, the MLP's norm
    // and router top-k into the router GEMV, rope + KV append, the experts + their combine.
    const layers = JSON.parse(readFileSync(join(dir, 'hf', 'config.json'), 'utf8')).num_hidden_layers as number;
    expect(alone.launches - fused.launches).toBe(5 * layers);
  });

  // End to end, once every op of the model has its CUDA kernel in this build: `gptoss check
  // --device cuda` on the emulated build, every fixture, layout, mode and path (prefill, decode,
  // prefix + decode, decode vs prefill) against the official reference's logits.
  it.skipIf(missing.length > 0)(
    'gptoss check --device cuda: every fixture, layout, mode and path within the tolerances check uses',
    async () => {
      const results = await runCheck({ fixtures, device: 'cuda' });
      expect(results.length).toBeGreaterThan(0);
      expect(results.filter((r) => !r.pass)).toEqual([]);
    },
    // 64 checks through the emulator: minutes on two cores, and 587 s once with other jobs beside it.
    1_800_000,
  );
});
