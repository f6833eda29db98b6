// The shared engine: concurrent requests batched into common steps give exactly what each gives
// alone; admission, overload, cancellation and close behave; pages always come back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  AbortedError,
  ContextOverflowError,
  createEngine,
  DisposedError,
  type Engine,
  InvalidArgumentError,
  loadModel,
  type Model,
  OverloadedError,
  UnsupportedError,
} from '../lib/index.js';
import type { Decoder } from '../lib/chat/generate.js';
import { Sampler, type TokenConstraint } from '../lib/engine/sampler.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

let model: Model;
beforeAll(async () => {
  const dir = tinyRealVocabCheckpoint(11);
  model = await loadModel(dir);
});
afterAll(() => model?.dispose());

const prompt = (i: number) => Array.from({ length: 3 + ((i * 7) % 23) }, (_, j) => (i * 1009 + j * 31) % 199000);

describe('engine', () => {
  it('concurrent requests share steps and each gets what it gets alone (greedy and seeded)', async () => {
    const opts = (i: number) => (i % 2 ? { temperature: 0 } : { seed: i, topP: 0.9 });
    const alone: number[][] = [];
    for (let i = 0; i < 8; i++)
      alone.push((await model.complete(prompt(i), { maxTokens: 12, stopTokens: [], ...opts(i) }).result()).tokens);
    const engine = await createEngine({ model, maxSequences: 8, maxBatchTokens: 32, pageSize: 4 });
    const together = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        engine.complete(prompt(i), { maxTokens: 12, stopTokens: [], ...opts(i) }).result(),
      ),
    );
    together.forEach((r, i) => expect(r.tokens).toEqual(alone[i]));
    const st = engine.stats();
    expect(st.generatedTokens).toBe(96);
    expect(st.steps).toBeLessThan(40); // 96 tokens alone would be 96 steps
    expect(st.kvPagesUsed).toBe(0);
    await engine.close();
  });

  it('admits at most maxSequences at once and queues the rest', async () => {
    const engine = await createEngine({ model, maxSequences: 2, maxBatchTokens: 16 });
    const runs = Array.from({ length: 5 }, (_, i) =>
      engine.complete(prompt(i), { maxTokens: 6, temperature: 0, stopTokens: [] }).result(),
    );
    await new Promise((r) => setTimeout(r, 0));
    expect(engine.stats().running + engine.stats().queued).toBe(5);
    expect(engine.stats().running).toBeLessThanOrEqual(2);
    const res = await Promise.all(runs);
    expect(res.every((r) => r.tokens.length === 6)).toBe(true);
    await engine.close();
  });

  it('a full queue answers OverloadedError at once; requests too big for the pool get ContextOverflowError', async () => {
    const engine = await createEngine({ model, maxSequences: 1, maxQueue: 1, maxBatchTokens: 8, maxContext: 64 });
    const a = engine.complete(prompt(1), { maxTokens: 30, stopTokens: [] }).result();
    const b = engine.complete(prompt(2), { maxTokens: 30, stopTokens: [] }).result();
    await new Promise((r) => setTimeout(r, 0));
    await expect(engine.complete(prompt(3), { maxTokens: 30, stopTokens: [] }).result()).rejects.toThrow(
      OverloadedError,
    );
    await expect(
      engine.complete(prompt(3), { maxTokens: 100, maxContext: 200, stopTokens: [] }).result(),
    ).rejects.toThrow(ContextOverflowError);
    await Promise.all([a, b]);
    await engine.close();
  });

  it('an AbortSignal ends one request, frees its pages, and leaves the others untouched', async () => {
    const engine = await createEngine({ model, maxSequences: 4, maxBatchTokens: 16 });
    const alone = (await model.complete(prompt(5), { maxTokens: 40, temperature: 0, stopTokens: [] }).result()).tokens;
    const ac = new AbortController();
    const doomed = engine
      .complete(prompt(4), { maxTokens: 100000, maxContext: 4000, signal: ac.signal, stopTokens: [] })
      .result();
    const kept = engine.complete(prompt(5), { maxTokens: 40, temperature: 0, stopTokens: [] }).result();
    setTimeout(() => ac.abort(), 20);
    await expect(doomed).rejects.toThrow(AbortedError);
    expect((await kept).tokens).toEqual(alone);
    expect(engine.stats().kvPagesUsed).toBe(0);
    await engine.close();
  });

  it('close() finishes in-flight work; close({abort}) ends it; a closed engine refuses requests', async () => {
    const engine = await createEngine({ model, maxSequences: 2 });
    expect(engine.maxBatchTokens).toBe(256); // the CPU's default step budget (CUDA's: 2048)
    const r = engine.complete(prompt(6), { maxTokens: 10, temperature: 0, stopTokens: [] }).result();
    await engine.close();
    expect((await r).tokens).toHaveLength(10);
    await expect(engine.complete(prompt(6), {}).result()).rejects.toThrow(DisposedError);
    const e2 = await createEngine({ model, maxSequences: 2 });
    const long = e2.complete(prompt(7), { maxTokens: 100000, maxContext: 4000, stopTokens: [] }).result();
    const ended = expect(long).rejects.toThrow(AbortedError);
    await new Promise((res) => setTimeout(res, 20));
    await e2.close({ abort: true });
    await ended;
    expect(model.disposed).toBe(false); // the engine did not load it, so it does not free it
  });

  it('chat through the engine streams the same events as through the model', async () => {
    const engine = await createEngine({ model });
    const messages = [{ role: 'user' as const, content: 'Hello' }];
    const viaEngine = await engine.chat(messages, { maxTokens: 10, seed: 4, currentDate: '2025-01-01' }).result();
    const viaModel = await model.chat(messages, { maxTokens: 10, seed: 4, currentDate: '2025-01-01' }).result();
    expect(viaEngine.text).toBe(viaModel.text);
    expect(viaEngine.usage).toEqual(viaModel.usage);
    await engine.close();
  });
});

describe('an engine the device cannot hold', () => {
  it('a KV pool the device cannot hold is refused before anything is allocated, as a model is', async () => {
    const { totalmem } = await import('node:os');
    const { InsufficientMemoryError } = await import('../lib/index.js');
    // 4096 sequences at the model's whole context: about 290 GB of pages for this tiny model.
    const e = await createEngine({ model, maxSequences: 4096, maxContext: model.config.maxContext }).catch(
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(InsufficientMemoryError);
    const est = (e as InstanceType<typeof InsufficientMemoryError>).estimate;
    expect(est.fits).toBe(false);
    expect(est.kvBytes).toBeGreaterThan(4096 * model.config.maxContext * 2 * 64 * 4);
    expect((e as Error).message).toMatch(
      /^an engine of 4096 sequences x 131072 positions needs .* GB .*; lower maxSequences or maxContext/,
    );
    // A pool given in bytes is held to the same check.
    const big = await createEngine({ model, kvCacheBytes: 2 * totalmem() }).catch((x: unknown) => x);
    expect(big).toBeInstanceOf(InsufficientMemoryError);
    expect((big as Error).message).toMatch(/^an engine with kvCacheBytes \d+ needs/);
    // The model stays usable, and an engine that fits still starts.
    const engine = await createEngine({ model, maxSequences: 2 });
    await engine.close();
  });
});

describe('prefix caching', () => {
  it('a request starting like an earlier one reuses its KV pages and still gets exactly its solo output', async () => {
    const system = Array.from({ length: 70 }, (_, j) => (j * 577 + 3) % 199000); // longer than the window (4) and 8 pages of 8
    const asks = [
      [...system, 11, 12, 13],
      [...system, 21, 22],
      [...system], // the whole prompt cached: only its last token runs again
      [...system.slice(0, 40), 5, 6, 7], // a shorter shared prefix
    ];
    const alone: number[][] = [];
    for (const p of asks)
      alone.push((await model.complete(p, { maxTokens: 8, temperature: 0, stopTokens: [] }).result()).tokens);
    const engine = await createEngine({ model, maxSequences: 4, pageSize: 8, maxBatchTokens: 32 });
    expect((await engine.complete(asks[0], { maxTokens: 8, temperature: 0, stopTokens: [] }).result()).tokens).toEqual(
      alone[0],
    );
    for (let i = 1; i < asks.length; i++) {
      const before = engine.stats();
      const r = await engine.complete(asks[i], { maxTokens: 8, temperature: 0, stopTokens: [] }).result();
      const after = engine.stats();
      expect(r.tokens).toEqual(alone[i]);
      expect(after.prefixPagesReused).toBeGreaterThan(before.prefixPagesReused);
      expect(after.promptTokens - before.promptTokens).toBeLessThan(asks[i].length - 30); // most of the prompt was not run again
    }
    // Concurrent requests sharing the prefix also match their solo outputs.
    const together = await Promise.all(
      asks.map((p) => engine.complete(p, { maxTokens: 8, temperature: 0, stopTokens: [] }).result()),
    );
    together.forEach((r, i) => expect(r.tokens).toEqual(alone[i]));
    expect(engine.stats().kvPagesUsed).toBe(0); // cached prefix pages count as available: evictable, never leaked
    await engine.close();
  });

  it('cached prefixes give way when the pool needs their pages', async () => {
    const engine = await createEngine({
      model,
      maxSequences: 1,
      pageSize: 4,
      maxContext: 64,
      kvCacheBytes: 16 * 4 * 2 * 64 * 4,
    });
    for (let i = 0; i < 6; i++) {
      const p = Array.from({ length: 40 }, (_, j) => (i * 1000 + j) % 199000);
      const r = await engine.complete(p, { maxTokens: 8, temperature: 0, stopTokens: [] }).result();
      expect(r.tokens).toHaveLength(8);
    }
    await engine.close();
  });
});

describe('engine edge cases', () => {
  it('admitting a request whose prefix pages sit idle in the cache does not overcommit the pool', async () => {
    const engine = await createEngine({
      model,
      maxSequences: 4,
      pageSize: 4,
      maxContext: 64,
      maxBatchTokens: 16,
      kvCacheBytes: 16 * 4 * 2 * 64 * 4,
    });
    const a = Array.from({ length: 8 }, (_, j) => 100 + j);
    await engine.complete(a, { maxTokens: 4, temperature: 0, stopTokens: [] }).result(); // leaves 2 idle cached pages
    const c = engine
      .complete(
        Array.from({ length: 20 }, (_, j) => 500 + j),
        { maxTokens: 4, temperature: 0, stopTokens: [] },
      )
      .result();
    const b = engine.complete(a, { maxTokens: 40, temperature: 0, stopTokens: [] }).result();
    const [rc, rb] = await Promise.all([c, b]);
    expect(rc.tokens).toHaveLength(4);
    expect(rb.tokens).toHaveLength(40);
    expect(engine.stats().kvPagesUsed).toBe(0);
    await engine.close();
  });

  it('maxQueue 0 still serves requests that can be admitted at once', async () => {
    const engine = await createEngine({ model, maxQueue: 0 });
    expect((await engine.complete(prompt(1), { maxTokens: 3, stopTokens: [] }).result()).tokens).toHaveLength(3);
    await engine.close();
  });

  it('with more sequences than the step budget, every sequence makes progress', async () => {
    const engine = await createEngine({ model, maxSequences: 6, maxBatchTokens: 4 });
    const runs = Array.from({ length: 6 }, (_, i) =>
      engine.complete(prompt(i), { maxTokens: 5, temperature: 0, stopTokens: [] }).result(),
    );
    const res = await Promise.all(runs);
    expect(res.every((r) => r.tokens.length === 5)).toBe(true);
    await engine.close();
  });
});

describe('usage details', () => {
  it('reports the prompt tokens served from the prefix cache', async () => {
    const engine = await createEngine({ model, pageSize: 8 });
    const p = Array.from({ length: 50 }, (_, j) => (j * 31 + 7) % 199000);
    const first = await engine.complete(p, { maxTokens: 2, stopTokens: [] }).result();
    const second = await engine.complete(p, { maxTokens: 2, stopTokens: [] }).result();
    expect(first.usage.cachedPromptTokens).toBe(0);
    expect(second.usage.cachedPromptTokens).toBe(48); // six whole pages of eight
    await engine.close();
  });
});

describe("a constrained sequence's failure or slow mask is its own", () => {
  /** Any token for the first `free` draws, then the mask `then` gives (possibly late, or failing). */
  class Scripted implements TokenConstraint {
    mask: Int32Array | null = null;
    #draws = 0;
    constructor(
      readonly free: number,
      readonly then: () => Int32Array | null | Promise<Int32Array | null>,
    ) {}
    async prepare(): Promise<void> {
      this.mask = this.#draws++ < this.free ? null : await this.then();
    }
    accept(): void {}
    dispose(): void {}
  }
  const V = () => model.config.vocabSize;
  const start = (engine: Engine, i: number, maxTokens: number, constraint?: TokenConstraint) => {
    const sampler = new Sampler({ temperature: 0 }, V());
    sampler.constraint = constraint;
    const p = prompt(i);
    return engine.start(p, sampler, { maxTokens, maxContext: p.length + maxTokens, stopTokens: new Set() });
  };
  /** The decoder's tokens; the error it ended with, if any; the longest wait for one token (ms). */
  async function read(d: Decoder, n: number) {
    const tokens: number[] = [];
    let error: unknown;
    let gap = 0;
    try {
      for (let last = performance.now(); tokens.length < n;) {
        tokens.push((await d.next()).token);
        gap = Math.max(gap, performance.now() - last);
        last = performance.now();
      }
    } catch (e) {
      error = e;
    } finally {
      d.close();
    }
    return { tokens, error, gap };
  }

  it('a mask allowing nothing, a draw that fails and a mask that throws end their own sequences; one in the same steps gets its solo tokens', async () => {
    const alone = (await model.complete(prompt(5), { maxTokens: 12, temperature: 0, stopTokens: [] }).result()).tokens;
    const engine = await createEngine({ model, maxSequences: 4, maxBatchTokens: 128, pageSize: 8 });
    const words = (V() + 31) >>> 5;
    // Ids from 200014 are padding rows the sampler bans: allowing only one leaves no finite logit.
    const onlyPadding = new Int32Array(words);
    onlyPadding[200050 >>> 5] = 1 << (200050 & 31);
    const [empty, drawFails, throws, plain] = await Promise.all([
      read(start(engine, 1, 12, new Scripted(3, () => new Int32Array(words))), 12),
      read(start(engine, 2, 12, new Scripted(3, () => onlyPadding)), 12),
      read(
        start(engine, 3, 12, new Scripted(3, () => Promise.reject(new InvalidArgumentError('scripted failure')))),
        12,
      ),
      read(start(engine, 5, 12), 12),
    ]);
    expect(empty.tokens).toHaveLength(3);
    expect(empty.error).toBeInstanceOf(UnsupportedError);
    expect((empty.error as Error).message).toMatch(/allows no next token/);
    expect(drawFails.tokens).toHaveLength(3);
    expect(drawFails.error).toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/every allowed logit is -inf/),
    });
    expect(throws.tokens).toHaveLength(3);
    expect((throws.error as Error).message).toBe('scripted failure');
    expect(plain.error).toBeUndefined();
    expect(plain.tokens).toEqual(alone);
    // All four shared their steps: the plain one's 12 draws took about 12 steps, not 24.
    expect(engine.stats().steps).toBeLessThanOrEqual(14);
    expect(engine.stats().kvPagesUsed).toBe(0);
    await engine.close();
  });

  it("a sequence whose mask is slow sits out the steps until it is ready; the others' do not wait for it", async () => {
    const alone = (await model.complete(prompt(5), { maxTokens: 40, temperature: 0, stopTokens: [] }).result()).tokens;
    const engine = await createEngine({ model, maxSequences: 4, maxBatchTokens: 128, pageSize: 8 });
    // Its grammar's thread busy for 2.5 s (compiling another request's schema, say) at its 3rd draw.
    const late = new Scripted(2, () => new Promise((r) => setTimeout(() => r(null), 2500)));
    const slow = read(start(engine, 1, 6, late), 6);
    const plain = await read(start(engine, 5, 40), 40);
    expect(plain.error).toBeUndefined();
    expect(plain.tokens).toEqual(alone);
    // It waited 2.5 s per step before; a step of this model takes milliseconds.
    expect(plain.gap, 'the longest wait for one of its tokens, ms').toBeLessThan(1000);
    const s = await slow;
    expect(s.error).toBeUndefined();
    expect(s.tokens).toHaveLength(6);
    expect(s.gap).toBeGreaterThanOrEqual(2000);
    expect(engine.stats().kvPagesUsed).toBe(0);
    await engine.close();
  });
});
