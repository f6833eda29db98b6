// The Model / Session surface: lifetime, typed errors on bad input, and work off the JS thread.
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  AbortedError,
  BusyError,
  ContextOverflowError,
  createSyntheticModel,
  deviceInfo,
  DisposedError,
  InvalidArgumentError,
  loadModel,
  type Model,
} from '../lib/index.js';
import { fixtures, relErr, tmpDir, writeRandomHfCheckpoint } from './helpers/checkpoint.js';

describe('Session', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(join(fixtures, 'tiny-a', 'hf'), { mode: 'fp32' });
  });
  afterAll(() => model.dispose());

  it('gives bit-identical logits for the same tokens twice', async () => {
    const s = model.createSession();
    const a = await s.forward([1, 2, 3, 4, 5]);
    s.reset();
    const b = await s.forward([1, 2, 3, 4, 5]);
    expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    s.dispose();
  });

  it("logits: 'last' is the last row of 'all', and 'none' only advances the cache", async () => {
    const s1 = model.createSession(),
      s2 = model.createSession();
    const all = await s1.forward([9, 8, 7]);
    await s2.forward([9, 8], { logits: 'none' });
    const last = await s2.forward([7], { logits: 'last' });
    expect(relErr(last, all.subarray(2 * 1000))).toBeLessThan(1e-6);
    expect(s2.position).toBe(3);
  });

  it('refuses token ids outside the vocabulary, naming the index', async () => {
    const s = model.createSession();
    await expect(s.forward([1, 1000])).rejects.toThrow(InvalidArgumentError);
    await expect(s.forward([1, 1000])).rejects.toThrow(/token 1000 at index 1/);
    await expect(s.forward([1.5])).rejects.toThrow(InvalidArgumentError);
    await expect(s.forward([])).rejects.toThrow(InvalidArgumentError);
    expect(s.position).toBe(0);
  });

  it('checks what tokens is before allocating anything sized from it (issue 20)', async () => {
    const s = model.createSession();
    // Every read of an id is counted: an oversized length must be refused without walking it.
    let reads = 0;
    const huge = new Proxy({ length: 7e8 }, { get: (t, k) => (k === 'length' ? t.length : (reads++, 1)) });
    await expect(s.forward(huge as ArrayLike<number>)).rejects.toThrow(ContextOverflowError);
    expect(reads).toBe(0);
    for (const bad of [5, 'abc', null, { length: -1 }, { length: 2.5 }, { length: Number.NaN }, {}])
      await expect(s.forward(bad as never), JSON.stringify(bad)).rejects.toThrow(/forward: tokens must be an array/);
    await expect(s.forward(5 as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(s.next({ length: 7e8 } as never, undefined as never)).rejects.toThrow(ContextOverflowError);
    expect(s.position).toBe(0);
    expect((await s.forward({ length: 2, 0: 1, 1: 2 }, { logits: 'last' })).length).toBe(1000);
    s.dispose();
  });

  it('raises ContextOverflowError past maxContext and keeps the session usable', async () => {
    const s = model.createSession({ maxContext: 4 });
    await s.forward([1, 2, 3]);
    await expect(s.forward([4, 5])).rejects.toThrow(ContextOverflowError);
    expect((await s.forward([4], { logits: 'last' })).length).toBe(1000);
  });

  it('a second forward while one runs gets BusyError, not a race', async () => {
    const s = model.createSession();
    const first = s.forward(Array.from({ length: 64 }, (_, i) => i));
    await expect(s.forward([1])).rejects.toThrow(BusyError);
    await first;
    expect(s.position).toBe(64);
  });

  it('an aborted signal stops before the next chunk with AbortedError', async () => {
    const s = model.createSession({ maxTokens: 4 });
    const ac = new AbortController();
    ac.abort();
    await expect(s.forward([1, 2, 3], { signal: ac.signal })).rejects.toThrow();
    const ac2 = new AbortController();
    const p = s.forward(
      Array.from({ length: 40 }, (_, i) => i),
      { signal: ac2.signal },
    );
    ac2.abort();
    await expect(p).rejects.toThrow(AbortedError);
    expect(s.position % 4).toBe(0); // stopped between chunks; the cache holds whole chunks
  });

  it('misspelled options are refused with the likely intended one', () => {
    expect(() => model.createSession({ maxToken: 3 } as never)).toThrow(
      /unknown option "maxToken" \(did you mean "maxTokens"\?\)/,
    );
    expect(() => model.createSession({ maxContext: 0 })).toThrow(InvalidArgumentError);
  });

  it('dispose is idempotent; a disposed session or model raises ERR_DISPOSED', async () => {
    const m = await loadModel(join(fixtures, 'tiny-b', 'original'));
    const s = m.createSession();
    s.dispose();
    s.dispose();
    expect(s.disposed).toBe(true);
    await expect(s.forward([1])).rejects.toThrow(DisposedError);
    const s2 = m.createSession();
    m.dispose();
    expect(s2.disposed).toBe(true);
    expect(() => m.createSession()).toThrow(DisposedError);
    m.dispose();
  });

  it('disposing while a step is in flight lets the step finish safely', async () => {
    const m = await loadModel(join(fixtures, 'tiny-a', 'original'));
    const s = m.createSession();
    const p = s.forward(Array.from({ length: 100 }, (_, i) => i));
    m.dispose();
    await p; // the step holds its own reference to the weights and buffers
    expect(s.disposed).toBe(true);
  });
});

describe('work off the JS thread', () => {
  it('the event loop keeps turning during a forward pass', async () => {
    const m = await createSyntheticModel({ preset: '20b', layers: 1, seed: 3 });
    try {
      const s = m.createSession({ maxTokens: 32 });
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const t0 = performance.now();
      await s.forward(
        Array.from({ length: 32 }, (_, i) => i * 7),
        { logits: 'last' },
      );
      const ms = performance.now() - t0;
      clearInterval(timer);
      expect(ms).toBeGreaterThan(20);
      expect(ticks).toBeGreaterThan(ms / 10); // a blocked loop would tick once
    } finally {
      m.dispose();
    }
  });
});

describe('devices', () => {
  it("device 'cuda' without a usable CUDA backend fails with a typed error and the process carries on", async () => {
    const info = deviceInfo();
    expect(['avx512', 'avx2', 'generic']).toContain(info.cpu.simd);
    if (!info.cuda.available) expect(info.cuda.error).toBeTruthy();
    await expect(loadModel(join(fixtures, 'tiny-b', 'hf'), { device: 'cuda' })).rejects.toMatchObject({
      code: expect.stringMatching(/^ERR_(UNSUPPORTED|DEVICE)$/),
    });
    const m = await loadModel(join(fixtures, 'tiny-b', 'hf'));
    expect((await m.createSession().forward([1], { logits: 'last' })).length).toBe(777);
    m.dispose();
  });
});

describe('the real 201,088-entry vocabulary', () => {
  it('a random real-vocab checkpoint gives finite logits for the highest ids, decode equal to prefill', async () => {
    const dir = tmpDir();
    writeRandomHfCheckpoint(dir, {
      layers: 2,
      hidden: 64,
      intermediate: 32,
      experts: 4,
      topk: 2,
      heads: 2,
      kvHeads: 1,
      vocab: 201088,
      window: 4,
    });
    const m = await loadModel(dir, { mode: 'fp32' });
    try {
      const tokens = [200006, 17360, 200008, 201087, 199998, 200012, 0, 200002];
      const prefill = await m.createSession().forward(tokens);
      expect(prefill.length).toBe(tokens.length * 201088);
      expect(prefill.every(Number.isFinite)).toBe(true);
      const s = m.createSession();
      const dec = new Float32Array(prefill.length);
      for (let i = 0; i < tokens.length; i++) dec.set(await s.forward([tokens[i]], { logits: 'last' }), i * 201088);
      expect(relErr(dec, prefill)).toBeLessThan(1e-5);
      await expect(m.createSession().forward([201088])).rejects.toThrow(InvalidArgumentError);
    } finally {
      m.dispose();
    }
  });
});
