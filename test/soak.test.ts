// Soak: many requests through the HTTP server — random prompt and answer lengths, concurrent
// streams, clients that hang up mid-stream — then nothing may be left behind: no live sequence,
// every KV page free, and the process's RSS back within a stated bound of its level after a
// warm-up. SOAK_REQUESTS sets the count (`npm run soak` runs thousands; the default suite, 200).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, loadModel, type Model } from '../lib/index.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';
import { rng, tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

const REQUESTS = Number(process.env.SOAK_REQUESTS ?? 200);
const CONCURRENCY = 32;
/** RSS may end this far above its post-warm-up level (allocator caches, JIT code). */
const RSS_BOUND_MB = 64;

let model: Model;
let engine: Engine;
let server: RunningServer;

beforeAll(async () => {
  const dir = tinyRealVocabCheckpoint(99);
  model = await loadModel(dir);
  engine = await createEngine({ model, maxSequences: CONCURRENCY, maxContext: 256, maxBatchTokens: 128, pageSize: 8 });
  server = await listen(createApp(engine, { modelId: 'soak' }), { port: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.close({ abort: true });
  model?.dispose();
});

async function request(r: () => number, i: number): Promise<'done' | 'aborted' | 'error'> {
  const ac = new AbortController();
  const chat = r() < 0.5;
  const body = chat
    ? {
        model: 'soak',
        messages: [{ role: 'user', content: 'x '.repeat(1 + Math.floor(r() * 60)) }],
        max_tokens: 1 + Math.floor(r() * 40),
        stream: r() < 0.7,
        seed: i,
      }
    : {
        model: 'soak',
        prompt: Array.from({ length: 1 + Math.floor(r() * 150) }, () => Math.floor(r() * 199000)),
        max_tokens: 1 + Math.floor(r() * 60),
        stream: r() < 0.7,
        seed: i,
      };
  const abortAfter = r() < 0.25 ? Math.floor(r() * 5) : -1;
  try {
    const res = await fetch(`${server.url}/v1/${chat ? 'chat/completions' : 'completions'}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: ac.signal,
    });
    if (res.status !== 200) return 'error';
    let chunks = 0;
    for await (const _ of res.body as unknown as AsyncIterable<Uint8Array>) {
      if (abortAfter >= 0 && chunks++ >= abortAfter) {
        ac.abort();
        return 'aborted';
      }
    }
    return 'done';
  } catch (e) {
    if (ac.signal.aborted) return 'aborted';
    throw e;
  }
}

async function run(count: number, seed: number) {
  const r = rng(seed);
  const tally = { done: 0, aborted: 0, error: 0 };
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) {
        const i = next++;
        tally[await request(r, i)]++;
      }
    }),
  );
  return tally;
}

async function settle() {
  for (let i = 0; i < 200 && (engine.stats().running || engine.stats().queued); i++)
    await new Promise((res) => setTimeout(res, 25));
  (globalThis as { gc?: () => void }).gc?.();
}

describe('soak', () => {
  it(`${REQUESTS} requests: nothing left live, every KV page free, RSS back within ${RSS_BOUND_MB} MB`, async () => {
    await run(Math.min(100, REQUESTS), 1); // warm-up: JIT, allocator pools, the tokenizer
    await settle();
    const baseline = process.memoryUsage().rss;
    const t0 = Date.now();
    const tally = await run(REQUESTS, 2);
    await settle();
    const after = process.memoryUsage().rss;
    const s = engine.stats();
    const figures = {
      requests: REQUESTS,
      ...tally,
      seconds: (Date.now() - t0) / 1e3,
      generatedTokens: s.generatedTokens,
      steps: s.steps,
      rssBaselineMB: +(baseline / 2 ** 20).toFixed(1),
      rssAfterMB: +(after / 2 ** 20).toFixed(1),
      running: s.running,
      queued: s.queued,
      kvPagesUsed: s.kvPagesUsed,
    };
    console.log(`soak: ${JSON.stringify(figures)}`);
    expect(tally.error).toBe(0);
    expect(tally.done + tally.aborted).toBe(REQUESTS);
    expect(s).toMatchObject({ running: 0, queued: 0, kvPagesUsed: 0 });
    expect((after - baseline) / 2 ** 20).toBeLessThan(RSS_BOUND_MB);
  });
});
