// One client must not freeze the others (issue 20, item 6): while a request whose message is a
// long run of one letter is tokenised (quadratic in tiktoken's merge step: 300 KB took 80 s of the
// event loop), /health and a concurrent stream keep answering, and a 1 MB one gets a 4xx, not a
// 500. Client and server share this process's event loop, so a slow /health here is a blocked loop.
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, loadModel, type Model } from '../lib/index.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';
import { longestGap } from './helpers/latency.js';

let model: Model;
let engine: Engine;
let server: RunningServer;
const MODEL = 'tiny-gpt-oss';

beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(23));
  engine = await createEngine({ model, maxSequences: 4, maxBatchTokens: 128, maxContext: 512, pageSize: 8 });
  server = await listen(createApp(engine, { modelId: MODEL }), { port: 0 }); // the default 4 MiB body limit
});
afterAll(async () => {
  await server?.close();
  await engine?.close({ abort: true });
  model?.dispose();
});

const chat = (content: string, extra: object = {}) =>
  fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 4, ...extra }),
  });

/** Asks /health every 20 ms until `until` settles; the slowest answer in ms. */
async function slowestHealth(until: Promise<unknown>): Promise<number> {
  let done = false;
  void until.finally(() => (done = true)).catch(() => {});
  let worst = 0;
  while (!done) {
    const t0 = performance.now();
    const r = await fetch(`${server.url}/health`);
    expect((await r.json()).status).toBe('ok');
    worst = Math.max(worst, performance.now() - t0);
    await new Promise((r) => setTimeout(r, 20));
  }
  return worst;
}

describe('a hostile prompt does not freeze the server', () => {
  it('while a 300 KB one-letter message is tokenised, /health and a concurrent stream answer within 1 s', async () => {
    // Warm the paths the measurement uses (first-request setup is not the freeze in question).
    expect((await chat('Hello')).status).toBe(200);
    const stream = await chat('Tell me a story', { stream: true, max_tokens: 400, temperature: 1 });
    // (Once, in a full CI run, this was a 400; not reproduced alone or under CPU load: the body
    // says which 400.)
    expect(stream.status, stream.status === 200 ? '' : await stream.text()).toBe(200);
    const hostile = chat('a'.repeat(300_000));
    const [health, gap, res] = await Promise.all([slowestHealth(hostile), longestGap(stream), hostile]);
    // Too long for this engine's 512-token context: a 400 saying so, once tokenised.
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe('context_length_exceeded');
    // ~10 ms when the tokenising is off the event loop; it was 80 s before.
    expect(health).toBeLessThan(1000);
    expect(gap).toBeLessThan(1000);
  }, 240_000);

  it('a 1 MB one-letter message gets a 400 (it was a 500 "unreachable" from the WASM tokenizer)', async () => {
    const res = await chat('a'.repeat(1_000_000));
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe('context_length_exceeded');
    // A raw completion prompt goes the same way (its special tokens recognised).
    const raw = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: `<|start|>user<|message|>${'a'.repeat(1_000_000)}`, max_tokens: 4 }),
    });
    expect(raw.status).toBe(400);
  }, 240_000);
});

describe('a large body does not freeze the server', () => {
  const send = (path: string, body: string) =>
    fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  /** The answer and the event loop's longest delay (ms) while it was worked out. */
  async function timed(path: string, body: string) {
    const h = monitorEventLoopDelay({ resolution: 10 });
    h.enable();
    const r = await send(path, body);
    const json = await r.json();
    h.disable();
    return { status: r.status, json, delay: h.max / 1e6 };
  }
  const near4MiB = (one: string) => Math.floor((4 * 2 ** 20 - 200) / (one.length + 1));

  it('bodies of many small values are refused before they are parsed (413), with the event loop free', async () => {
    const warm = await chat('Hello');
    expect(warm.status, await warm.clone().text()).toBe(200); // warm
    const message = '{"role":"user","content":"a"}';
    const bodies = {
      // ~130k messages: 0.8-2.3 s of the event loop to parse, walk and validate before.
      messages: `{"model":"${MODEL}","max_tokens":2,"messages":[${Array(near4MiB(message)).fill(message).join(',')}]}`,
      parts: `{"model":"${MODEL}","max_tokens":2,"messages":[{"role":"user","content":[${Array(near4MiB('{"type":"text","text":"a"}')).fill('{"type":"text","text":"a"}').join(',')}]}]}`,
      // 2M token ids: 0.7-1.4 s before.
      ids: `{"model":"${MODEL}","max_tokens":2,"prompt":[${Array(near4MiB('1')).fill('1').join(',')}]}`,
      // 300k biased ids: 0.8-1.3 s, and accepted.
      bias: `{"model":"${MODEL}","max_tokens":2,"prompt":"hi","logit_bias":{${Array.from({ length: 300_000 }, (_, i) => `"${i}":1`).join(',')}}}`,
    };
    for (const [name, body] of Object.entries(bodies)) {
      const path = name === 'ids' || name === 'bias' ? '/v1/completions' : '/v1/chat/completions';
      const { status, json, delay } = await timed(path, body);
      expect(status, name).toBe(413);
      expect(json.error.message).toMatch(/holds more than 150000 JSON values/);
      // Tens of ms here; a bound that holds on a loaded 2-core machine.
      expect(delay, `${name}: the event loop's longest delay, ms`).toBeLessThan(300);
    }
  }, 240_000);

  it('lists within the value budget are held to what a request needs (400 naming the field)', async () => {
    const cases: [string, object, RegExp][] = [
      [
        '/v1/completions',
        { prompt: 'hi', logit_bias: Object.fromEntries(Array.from({ length: 301 }, (_, i) => [i, 1])) },
        /logit_bias: at most 300 token ids may be biased/,
      ],
      [
        '/v1/chat/completions',
        {
          messages: [{ role: 'user', content: 'hi' }],
          tools: Array.from({ length: 129 }, (_, i) => ({ type: 'function', function: { name: `t${i}` } })),
        },
        /^tools: /,
      ],
      [
        '/v1/chat/completions',
        { messages: Array.from({ length: 10_001 }, () => ({ role: 'user', content: 'a' })) },
        /^messages: /,
      ],
      [
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: Array.from({ length: 1001 }, () => ({ type: 'text', text: 'a' })) }] },
        /^messages\.0\.content/,
      ],
      ['/v1/completions', { prompt: Array.from({ length: 131_073 }, () => 1) }, /^prompt/],
      ['/v1/responses', { input: Array.from({ length: 10_001 }, () => ({ role: 'user', content: 'a' })) }, /^input/],
    ];
    for (const [path, extra, why] of cases) {
      const r = await send(path, JSON.stringify({ model: MODEL, max_tokens: 2, ...extra }));
      const body = await r.json();
      expect(r.status, `${path} ${JSON.stringify(body).slice(0, 200)}`).toBe(400);
      expect(body.error.message).toMatch(why);
    }
    // At the limits: served.
    const ok = await send(
      '/v1/completions',
      JSON.stringify({
        model: MODEL,
        prompt: 'hi',
        max_tokens: 2,
        logit_bias: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [i, 1])),
      }),
    );
    expect(ok.status).toBe(200);
  }, 240_000);
});
