// One client's request fails that request alone: it never ends the process (an unhandled
// rejection from n > 1's extra answers), never fails another sequence of the same step (a
// sampling failure in the shared batch), and never leaves the grammar compiler broken for the
// next client. Each case here once did one of those things.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, type EngineOptions, loadModel, type Model } from '../lib/index.js';
import { Sampler } from '../lib/engine/sampler.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';
import { TOKENS } from '../lib/chat/tokenizer.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';
import { longestGap } from './helpers/latency.js';

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

async function serverOver(
  opts: Omit<EngineOptions, 'model'>,
): Promise<{ engine: Engine; server: RunningServer; [Symbol.asyncDispose](): Promise<void> }> {
  const engine = await createEngine({ model, ...opts });
  const server = await listen(createApp(engine, { modelId: MODEL }), { port: 0 });
  return {
    engine,
    server,
    async [Symbol.asyncDispose]() {
      await server.close();
      await engine.close({ abort: true });
    },
  };
}

const post = (url: string, path: string, body: object, signal?: AbortSignal) =>
  fetch(`${url}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
    signal,
  });

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
    for (let i = 0; i < 100 && s.engine.stats().running + s.engine.stats().queued > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
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
      const draw = (mask?: Int32Array) => ({
        ...new Sampler({ temperature: 0 }, V).params(),
        ...(mask && { allowMask: mask }),
      });
      const table = Int32Array.of(0, 1, 2, 3);
      const results = await program.step({
        tokens: Int32Array.of(1000, 2000),
        positions: Int32Array.of(0, 0),
        seqs: Int32Array.of(0, 1),
        full: { table, ring: 2, pageSize: 16 },
        sliding: { table, ring: 2, pageSize: 16 },
        logitRows: Int32Array.of(0, 1),
        out: new Float32Array(2 * V),
        sampling: [draw(new Int32Array((V + 31) >>> 5)), draw()],
      });
      expect(results[0]).toMatchObject({
        error: expect.objectContaining({
          code: 'ERR_INVALID_ARGUMENT',
          message: expect.stringMatching(/every allowed logit is -inf/),
        }),
      });
      expect(results[1]).toMatchObject({ token: expect.any(Number) });
    } finally {
      program.dispose();
    }
  });
});

describe("one client's schema never breaks structured output for the others", () => {
  const endReasoning = { logit_bias: { [TOKENS.end]: 100 } };
  const chat = (schema: unknown, extra: object = {}) => ({
    model: MODEL,
    messages: [{ role: 'user', content: 'Reply in JSON.' }],
    max_tokens: 300,
    seed: 1,
    ...endReasoning,
    response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
    ...extra,
  });
  const good = {
    type: 'object',
    properties: { n: { type: 'integer' }, s: { enum: ['a', 'b'] } },
    required: ['n', 's'],
  };
  const deep = (n: number) => {
    let s: object = { type: 'string' };
    for (let i = 0; i < n; i++) s = { type: 'object', properties: { a: s }, required: ['a'] };
    return s;
  };
  /** A request with a schema the grammar can build must still answer with a valid document. */
  async function stillWorks(url: string) {
    const r = await post(url, '/v1/chat/completions', chat(good));
    expect(r.status).toBe(200);
    const choice = (await r.json()).choices[0];
    expect(choice.finish_reason).toBe('stop');
    const doc = JSON.parse(choice.message.content);
    expect(Number.isInteger(doc.n) && ['a', 'b'].includes(doc.s), JSON.stringify(doc)).toBe(true);
  }

  it('schemas the grammar compiler would fault on, spin on or refuse get a 400 naming why; the next request still works', async () => {
    await using s = await serverOver({ maxSequences: 8, maxContext: 512, pageSize: 8 });
    const hostile: [unknown, RegExp][] = [
      [deep(40), /nested more than 32 deep/],
      [deep(70), /the request body nests arrays and objects more than 128 deep/],
      [{ type: 'string', minLength: 5, maxLength: 2 }, /minLength 5 is over maxLength 2/],
      [{ enum: [] }, /enum must be a non-empty array/],
      [{ type: 'number', minimum: -1e300 }, /beyond the ±2\^53/],
      [{ type: 'integer', minimum: 5, exclusiveMaximum: 5 }, /no number lies between/],
      [{ type: 'array', minItems: 3, maxItems: 1 }, /minItems 3 is over maxItems 1/],
      [{ type: 'string', maxLength: 10_000_000 }, /maxLength 10000000 is over the 64/],
      [{ anyOf: Array.from({ length: 10_000 }, (_, i) => ({ const: i })) }, /more than 5000 subschemas/],
      [
        {
          type: 'object',
          properties: Object.fromEntries(Array.from({ length: 50_000 }, (_, i) => [`p${i}`, { type: 'integer' }])),
        },
        /more than 5000 subschemas|longer than/,
      ],
      [{ $defs: { n: { $ref: '#/$defs/n' } }, $ref: '#/$defs/n' }, /admits no finite document/],
      [
        {
          $defs: { n: { type: 'object', properties: { c: { $ref: '#/$defs/n' } }, required: ['c'] } },
          $ref: '#/$defs/n',
        },
        /admits no finite document/,
      ],
      // Past every static check: the compiler itself gives up (on its own thread, which is replaced).
      [
        { type: 'integer', minimum: 0.5, maximum: 0.7 },
        /grammar compiler cannot compile this JSON Schema \(Integer constraint must be a whole number\)/,
      ],
      [{ type: 'string', pattern: '[]' }, /grammar compiler cannot compile/],
    ];
    for (const [schema, why] of hostile) {
      const r = await post(s.server.url, '/v1/chat/completions', chat(schema));
      const body = await r.json();
      expect(r.status, JSON.stringify(body).slice(0, 300)).toBe(400);
      expect(body.error.message).toMatch(why);
      await stillWorks(s.server.url);
    }
    // Too deep for JSON.stringify (or any recursion) to walk: refused as it is read.
    const n = 100_000;
    const text = `{"model":"${MODEL}","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":${'{"type":"object","properties":{"a":'.repeat(n)}{"type":"string"}${'}}'.repeat(n)}}}}`;
    const r = await fetch(`${s.server.url}/v1/chat/completions`, {
      method: 'POST',
      body: text,
      headers: { 'content-type': 'application/json' },
    });
    expect(r.status).toBe(400);
    expect((await r.json()).error.message).toMatch(/more than 128 deep/);
    await stillWorks(s.server.url);
    // A recursive schema with a way out is fine.
    const tree = {
      $defs: {
        n: {
          type: 'object',
          properties: { v: { type: 'integer' }, c: { type: 'array', items: { $ref: '#/$defs/n' }, maxItems: 2 } },
          required: ['v'],
        },
      },
      $ref: '#/$defs/n',
    };
    expect((await post(s.server.url, '/v1/chat/completions', chat(tree))).status).toBe(200);
  });

  it('a schema with no finite document fails its own request; a stream in the same steps runs to the end', async () => {
    await using s = await serverOver({ maxSequences: 8, maxContext: 512, pageSize: 8 });
    // It once compiled to a mask allowing no token, and the sampler's error failed the whole step.
    const empty = { $defs: { n: { $ref: '#/$defs/n' } }, $ref: '#/$defs/n' };
    const victim = (async () => {
      const r = await post(s.server.url, '/v1/completions', {
        model: MODEL,
        prompt: 'Once',
        max_tokens: 200,
        stream: true,
        seed: 2,
      });
      const events = (await r.text())
        .split('\n\n')
        .filter((e) => e.startsWith('data: '))
        .map((e) => e.slice(6));
      return events;
    })();
    while (s.engine.stats().running < 1) await new Promise((r) => setTimeout(r, 2));
    const attack = await post(s.server.url, '/v1/chat/completions', chat(empty, { max_tokens: 200 }));
    expect(attack.status).toBe(400);
    expect((await attack.json()).error.message).toMatch(/admits no finite document/);
    const events = await victim;
    expect(events.at(-1)).toBe('[DONE]');
    expect(events.some((e) => e.includes('"error"'))).toBe(false);
    expect(events.filter((e) => e.includes('"text"')).length).toBeGreaterThanOrEqual(200);
  });

  it('an expensive compile runs off the event loop and past its budget gets a 400; /health and a stream keep answering', async () => {
    const { setCompileBudget } = await import('../lib/chat/grammar.js');
    await using s = await serverOver({ maxSequences: 8, maxContext: 4096, pageSize: 16 });
    await stillWorks(s.server.url); // the grammar threads are up
    setCompileBudget(1500);
    try {
      // Within the static bounds, yet seconds of compiling (each length unit is a vocabulary pass).
      const costly = {
        type: 'object',
        properties: Object.fromEntries(['a', 'b'].map((k) => [k, { type: 'string', minLength: 60, maxLength: 64 }])),
      };
      const stream = await post(s.server.url, '/v1/completions', {
        model: MODEL,
        prompt: 'Once',
        max_tokens: 3000,
        stream: true,
        seed: 3,
      });
      const attack = post(s.server.url, '/v1/chat/completions', chat(costly));
      const text: string[] = [];
      const gap = longestGap(stream, { text, until: attack });
      let worst = 0;
      let done = false;
      void attack.finally(() => (done = true));
      while (!done) {
        const t0 = performance.now();
        expect((await fetch(`${s.server.url}/health`)).status).toBe(200);
        worst = Math.max(worst, performance.now() - t0);
        await new Promise((r) => setTimeout(r, 20));
      }
      const r = await attack;
      expect(r.status).toBe(400);
      expect((await r.json()).error.message).toMatch(/too expensive to compile \(over 1500 ms\)/);
      expect(worst, 'the slowest /health answer during the compile, ms').toBeLessThan(1000);
      // The stream ran all through the compile, and no step waited on it (one did: 1.5 s).
      expect(await gap, 'the longest wait between two chunks of the stream, ms').toBeLessThan(1000);
      expect(text.join(''), 'the stream outlasted the compile').not.toContain('[DONE]');
      expect(text.join('')).toContain('"text"');
    } finally {
      setCompileBudget(5000);
    }
    await stillWorks(s.server.url);
  });
  it('new schemas past the vetting queue get a 429 with Retry-After; the queue drains and serves again', async () => {
    const { setCompileBudget, setVetQueueLimit } = await import('../lib/chat/grammar.js');
    await using s = await serverOver({ maxSequences: 8, maxContext: 4096, pageSize: 16 });
    await stillWorks(s.server.url); // the grammar threads are up
    setCompileBudget(1000);
    setVetQueueLimit(2);
    try {
      // Five new schemas at once, each seconds of compiling: two may wait, the rest are refused now.
      const costly = (k: string) => ({
        type: 'object',
        properties: Object.fromEntries(
          ['a', 'b'].map((p) => [p + k, { type: 'string', minLength: 60, maxLength: 64 }]),
        ),
      });
      const rs = await Promise.all(
        ['1', '2', '3', '4', '5'].map((k) => post(s.server.url, '/v1/chat/completions', chat(costly(k)))),
      );
      const bodies = await Promise.all(rs.map((r) => r.json()));
      const refused = rs.flatMap((r, i) => (r.status === 429 ? [{ r, body: bodies[i] }] : []));
      expect(
        rs.every((r) => r.status === 400 || r.status === 429),
        JSON.stringify(bodies).slice(0, 400),
      ).toBe(true);
      expect(refused.length).toBeGreaterThanOrEqual(1);
      expect(rs.filter((r) => r.status === 400).length).toBeGreaterThanOrEqual(2);
      expect(refused[0].r.headers.get('retry-after')).toBe('1');
      expect(refused[0].body.error.message).toMatch(/JSON Schemas are waiting to be compiled/);
    } finally {
      setCompileBudget(5000);
      setVetQueueLimit(8);
    }
    await stillWorks(s.server.url);
  });
});
