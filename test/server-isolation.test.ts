// One client's request fails that request alone: it never ends the process (an unhandled
// rejection from n > 1's extra answers), never fails another sequence of the same step (a
// sampling failure in the shared batch), and never leaves the grammar compiler broken for the
// next client. Each case here once did one of those things.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, type EngineOptions, loadModel, type Model } from '../lib/index.js';
import { Sampler } from '../lib/sampler.js';
import { createApp, listen, type RunningServer } from '../lib/server.js';
import { TOKENS } from '../lib/tokenizer.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

const MODEL = 'tiny-gpt-oss';
let model: Model;

// Vitest fails the run on an unhandled rejection; count them too, so each test names its own.
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => unhandled.push(e);

beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(21));
  process.on('unhandledRejection', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
  model?.dispose();
});

async function serverOver(opts: Omit<EngineOptions, 'model'>): Promise<{ engine: Engine; server: RunningServer; [Symbol.asyncDispose](): Promise<void> }> {
  const engine = await createEngine({ model, ...opts });
  const server = await listen(createApp(engine, { modelId: MODEL }), { port: 0 });
  return {
    engine, server,
    async [Symbol.asyncDispose]() {
      await server.close();
      await engine.close({ abort: true });
    },
  };
}

const post = (url: string, path: string, body: object, signal?: AbortSignal) =>
  fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal });

/** Settles after the event loop has had a few turns to surface late rejections. */
const settle = () => new Promise((r) => setTimeout(r, 50));

describe('n > 1 without streaming', () => {
  // Chat completions share the path (nResults); the random model's chat answers yield no event
  // for a long time, so completions are what can be hung up on mid-answer reliably.
  it('clients that hang up mid-answer end their request, not the server', async () => {
    await using s = await serverOver({ maxSequences: 16, maxContext: 4096, maxBatchTokens: 256, pageSize: 16 });
    const before = unhandled.length;
    const body = { model: MODEL, prompt: 'Once upon a time', n: 8, max_tokens: 3000, temperature: 1, seed: 1 };
    for (let i = 0; i < 4; i++) {
      const ac = new AbortController();
      const req = post(s.server.url, '/v1/completions', body, ac.signal).catch((e: Error) => e);
      // Hang up once the extra answers are under way.
      for (let t = 0; t < 2000 && s.engine.stats().running < 8; t++) await new Promise((r) => setTimeout(r, 5));
      expect(s.engine.stats().running, 'the extra answers are running').toBe(8);
      await new Promise((r) => setTimeout(r, 20 * i));
      ac.abort();
      expect(await req).toBeInstanceOf(Error);
      await settle();
    }
    expect(unhandled.length - before).toBe(0);
    // Every sequence's pages went back, and the server still answers.
    for (let i = 0; i < 100 && s.engine.stats().running + s.engine.stats().queued > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(s.engine.stats().running).toBe(0);
    expect(s.engine.stats().kvPagesUsed).toBe(0);
    const ok = await post(s.server.url, '/v1/completions', { model: MODEL, prompt: 'Hi', max_tokens: 2 });
    expect(ok.status).toBe(200);
  });

  it('extra answers refused by a full queue give the request a 429, not the process an exit', async () => {
    await using s = await serverOver({ maxSequences: 1, maxQueue: 0, maxContext: 512, pageSize: 8 });
    const before = unhandled.length;
    for (const [route, body] of [
      ['/v1/completions', { model: MODEL, prompt: 'Once', n: 3, max_tokens: 20 }],
      ['/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'Hi' }], n: 3, max_tokens: 20 }],
    ] as const) {
      const r = await post(s.server.url, route, body);
      expect(r.status).toBe(429);
      expect((await r.json()).error.code).toBe('overloaded');
    }
    await settle();
    expect(unhandled.length - before).toBe(0);
    const ok = await post(s.server.url, '/v1/completions', { model: MODEL, prompt: 'Hi', max_tokens: 2 });
    expect(ok.status).toBe(200);
    expect(s.engine.stats().kvPagesUsed).toBe(0);
  });
});

describe("a sequence's own failure", () => {
  it('a logit row whose draw fails (a mask allowing no token) fails that row alone in the step', async () => {
    const program = model.createPagedProgram({ maxTokens: 4, fullRows: 64, slidingRows: 64 });
    try {
      const V = program.vocab;
      const draw = (mask?: Int32Array) => ({ ...new Sampler({ temperature: 0 }, V).params(), ...(mask && { allowMask: mask }) });
      const table = Int32Array.of(0, 1, 2, 3);
      const results = await program.step({
        tokens: Int32Array.of(1000, 2000), positions: Int32Array.of(0, 0), seqs: Int32Array.of(0, 1),
        full: { table, ring: 2, pageSize: 16 }, sliding: { table, ring: 2, pageSize: 16 },
        logitRows: Int32Array.of(0, 1), out: new Float32Array(2 * V),
        sampling: [draw(new Int32Array((V + 31) >>> 5)), draw()],
      });
      expect(results[0]).toMatchObject({ error: expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringMatching(/every allowed logit is -inf/) }) });
      expect(results[1]).toMatchObject({ token: expect.any(Number) });
    } finally {
      program.dispose();
    }
  });
});
