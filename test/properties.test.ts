// Property-based tests (fast-check) of the surfaces that read input we do not control: the
// tokenizer, the Harmony streaming parser and every server route.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, getTokenizer, GptOssError, loadModel, type Model } from '../lib/index.js';
import { parseMessagesFromCompletionTokens, StreamableParser } from '../lib/chat/harmony/index.js';
import { createApp } from '../lib/server/server.js';
import { tinyRealVocabCheckpoint, tmpDir } from './helpers/checkpoint.js';

const tok = getTokenizer();

describe('tokenizer properties', () => {
  it('decode(encode(s)) == s for arbitrary Unicode', () => {
    // A leading U+FEFF was once dropped by the decoder (taken for a byte-order mark).
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => tok.decode(tok.encode(s)) === s),
      { numRuns: 500, examples: [['\uFEFFabc'], ['\uFEFF']] },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => tok.decode(tok.encode(s)) === s),
      { numRuns: 500 },
    );
  });

  it('the stream decoder joins to the same text however tokens arrive', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const d = tok.streamDecoder();
        return (
          tok
            .encode(s)
            .map((t) => d.push(t))
            .join('') +
            d.flush() ===
          s
        );
      }),
      { numRuns: 300, examples: [['\uFEFF🦀']] },
    );
  });
});

describe('Harmony streaming parser properties', () => {
  // Token soup: framing specials, header words, text, and random ids.
  const special = fc.constantFrom(200002, 200003, 200005, 200006, 200007, 200008, 200012);
  const word = fc.constantFrom(
    ...[
      'assistant',
      'analysis',
      'final',
      'commentary',
      ' to=functions.f',
      ' json',
      'user',
      'Hello',
      ' world',
      '{"a":1}',
      '🦀',
    ].flatMap((w) => tok.encode(w)),
  );
  const token = fc.oneof(
    { weight: 3, arbitrary: special },
    { weight: 4, arbitrary: word },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 201087 }) },
  );

  it('never throws anything but a typed error, and agrees with the whole-completion parser', () => {
    fc.assert(
      fc.property(fc.array(token, { maxLength: 60 }), fc.boolean(), (tokens, strict) => {
        let whole: unknown, streamed: unknown;
        let wholeErr: unknown, streamErr: unknown;
        try {
          whole = parseMessagesFromCompletionTokens(tokens, 'assistant', { strict });
        } catch (e) {
          wholeErr = e;
        }
        try {
          const p = new StreamableParser('assistant', { strict });
          for (const t of tokens) p.process(t);
          p.processEos();
          streamed = p.messages;
        } catch (e) {
          streamErr = e;
        }
        for (const e of [wholeErr, streamErr]) if (e !== undefined) expect(e).toBeInstanceOf(GptOssError);
        expect(streamErr === undefined).toBe(wholeErr === undefined);
        if (wholeErr === undefined) expect(streamed).toEqual(whole);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('server request validation properties', () => {
  let model: Model;
  let engine: Engine;
  let app: ReturnType<typeof createApp>;
  beforeAll(async () => {
    const dir = tinyRealVocabCheckpoint(3, { layers: 1, hidden: 32, experts: 2, topk: 1, heads: 1 });
    model = await loadModel(dir);
    engine = await createEngine({ model, maxContext: 160, maxSequences: 4 });
    app = createApp(engine, { modelId: 'm', maxBodyBytes: 32 * 1024 });
  });
  afterAll(async () => {
    await engine?.close({ abort: true });
    model?.dispose();
  });

  const valid = {
    '/v1/chat/completions': { model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 },
    '/v1/completions': { model: 'm', prompt: 'hi', max_tokens: 2 },
    '/v1/responses': { model: 'm', input: 'hi', max_output_tokens: 2 },
  } as const;

  async function check(route: string, body: string) {
    const res = await app.request(route, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    expect(res.status, `${route} ${body.slice(0, 300)}`).toBeLessThan(500);
    const text = await res.text();
    if (res.status >= 400) {
      const e = JSON.parse(text) as { error: { message: unknown; type: unknown } };
      expect(typeof e.error.message).toBe('string');
      expect(typeof e.error.type).toBe('string');
    }
  }

  it('arbitrary JSON gets a 2xx or a 4xx with an OpenAI-shaped error, never a 5xx', async () => {
    for (const route of Object.keys(valid))
      await fc.assert(
        fc.asyncProperty(fc.json(), (j) => check(route, j)),
        { numRuns: 150 },
      );
  });

  it('valid requests with one field replaced by anything get a 2xx or a 4xx, never a 5xx', async () => {
    for (const [route, base] of Object.entries(valid)) {
      const keys = [
        ...Object.keys(base),
        'temperature',
        'top_p',
        'stop',
        'seed',
        'stream',
        'tools',
        'tool_choice',
        'reasoning_effort',
        'n',
        'logit_bias',
        'max_completion_tokens',
        'instructions',
        'reasoning',
      ];
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...keys), fc.jsonValue({ maxDepth: 3 }), async (key, value) => {
          const body = { ...base, [key]: value } as Record<string, unknown>;
          if (body.stream === true) body.max_tokens = 2;
          await check(route, JSON.stringify(body));
        }),
        { numRuns: 150 },
      );
    }
  });
});

describe('server isolation properties', () => {
  // One client's hostile request (a generated schema: deep, contradictory, recursive, huge; n > 1
  // with a hang-up at a random moment) leaves every other request exactly as it would have been:
  // a greedy control completion running beside it gives the same tokens every time.
  let model: Model;
  let engine: Engine;
  let app: ReturnType<typeof createApp>;
  let reference: string;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  const control = { model: 'm', prompt: 'The control request', max_tokens: 24, temperature: 0 };
  const post = async (route: string, body: object, signal?: AbortSignal) =>
    app.request(route, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      signal,
    });
  const controlText = async () => {
    const r = await post('/v1/completions', control);
    expect(r.status).toBe(200);
    return ((await r.json()) as { choices: { text: string }[] }).choices[0].text;
  };
  // A structured control with a schema new each time: a grammar compiler left broken by a hostile
  // schema would fail it (it once did, for every client until restart).
  let fresh = 0;
  const controlStructured = async () => {
    const key = `k${fresh++}`;
    const r = await post('/v1/chat/completions', {
      model: 'm',
      messages: [{ role: 'user', content: 'JSON' }],
      max_tokens: 200,
      logit_bias: { 200007: 100 },
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'c',
          schema: {
            type: 'object',
            properties: { [key]: { type: 'integer', minimum: 0, maximum: 9 } },
            required: [key],
            additionalProperties: false,
          },
        },
      },
    });
    const body = await r.text();
    expect(r.status, body.slice(0, 300)).toBe(200);
    const choice = (JSON.parse(body) as { choices: { message: { content: string }; finish_reason: string }[] })
      .choices[0];
    expect(choice.finish_reason, body.slice(0, 300)).toBe('stop');
    const doc = JSON.parse(choice.message.content) as Record<string, unknown>;
    expect(Number.isInteger(doc[key]), JSON.stringify(doc)).toBe(true);
  };

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    model = await loadModel(tinyRealVocabCheckpoint(3, { layers: 1, hidden: 32, experts: 2, topk: 1, heads: 1 }));
    engine = await createEngine({ model, maxContext: 16384, maxSequences: 8, pageSize: 16 });
    app = createApp(engine, { modelId: 'm' });
    reference = await controlText();
    const { setCompileBudget } = await import('../lib/chat/grammar.js');
    setCompileBudget(1000); // what runs past it is refused; keeps the run short
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    const { setCompileBudget } = await import('../lib/chat/grammar.js');
    setCompileBudget(5000);
    await engine?.close({ abort: true });
    model?.dispose();
  });

  // Schemas from the keywords the checker and the compiler know, with bounds drawn wide (negative,
  // contradictory, huge), empty enums, $refs into $defs that may loop, and nesting that may run deep.
  // Mostly within what the grammar can build, sometimes anywhere (fractional, contradictory, huge).
  const wide = (lo: number, hi: number, wildLo: number, wildHi: number) =>
    fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: lo, max: hi }) },
      { weight: 1, arbitrary: fc.double({ min: wildLo, max: wildHi, noNaN: true }) },
    );
  const schema = fc.letrec<{ node: unknown }>((tie) => ({
    node: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.record({ type: fc.constantFrom('string', 'integer', 'number', 'boolean', 'null') }),
      fc.record(
        { type: fc.constant('string'), minLength: wide(0, 8, -1, 200), maxLength: wide(0, 8, 0, 1e7) },
        { requiredKeys: ['type'] },
      ),
      fc.record(
        {
          type: fc.constantFrom('integer', 'number'),
          minimum: wide(-100, 100, -1e300, 1e300),
          maximum: wide(-100, 100, -1e300, 1e300),
          exclusiveMaximum: wide(-100, 100, -1e20, 1e20),
        },
        { requiredKeys: ['type'] },
      ),
      fc.record({ enum: fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 }) }),
      fc.record({ $ref: fc.constantFrom('#/$defs/a', '#/$defs/b', '#/$defs/missing') }),
      fc.record({ anyOf: fc.array(tie('node'), { minLength: 0, maxLength: 3 }) }),
      fc.record(
        {
          type: fc.constant('array'),
          items: tie('node'),
          minItems: fc.integer({ min: 0, max: 3 }),
          maxItems: wide(0, 8, 0, 2000),
        },
        { requiredKeys: ['type', 'items'] },
      ),
      fc.record(
        {
          type: fc.constant('object'),
          properties: fc.dictionary(fc.constantFrom('a', 'b', 'c', '__proto__', 'constructor'), tie('node'), {
            maxKeys: 3,
          }),
          required: fc.subarray(['a', 'b', 'c']),
        },
        { requiredKeys: ['type', 'properties'] },
      ),
    ),
  })).node;
  const deepOrHuge = fc.oneof(
    fc.integer({ min: 20, max: 300 }).map((n) => {
      let s: object = { type: 'string' };
      for (let i = 0; i < n; i++) s = { type: 'array', items: s };
      return s;
    }),
    fc.integer({ min: 1000, max: 8000 }).map((n) => ({ anyOf: Array.from({ length: n }, (_, i) => ({ const: i })) })),
  );
  const hostileSchema = fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .record({ root: schema, a: schema, b: schema })
        .map(({ root, a, b }) => ({ ...(root as object), $defs: { a, b } })),
    },
    { weight: 1, arbitrary: deepOrHuge },
  );

  it('a generated schema gets a 2xx or a 4xx and leaves the control request unchanged', async () => {
    await fc.assert(
      fc.asyncProperty(hostileSchema, fc.boolean(), async (sch, streamed) => {
        const hostile = post('/v1/chat/completions', {
          model: 'm',
          messages: [{ role: 'user', content: 'JSON' }],
          max_tokens: 40,
          stream: streamed,
          logit_bias: { 200007: 100 },
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema: sch } },
        }).then(async (r) => [r.status, await r.text()] as const);
        const [text, [status, body]] = await Promise.all([controlText(), hostile]);
        expect(status, body.slice(0, 300)).toBeLessThan(500);
        expect(text).toBe(reference);
        await controlStructured();
      }),
      { numRuns: 60 },
    );
    expect(await controlText()).toBe(reference);
    expect(unhandled).toEqual([]);
  });

  it('n > 1 with a hang-up at any moment fails only that request', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 8 }),
        fc.integer({ min: 0, max: 60 }),
        fc.boolean(),
        fc.constantFrom('/v1/completions', '/v1/chat/completions'),
        async (n, after, streamed, route) => {
          const ac = new AbortController();
          const body =
            route === '/v1/completions'
              ? { model: 'm', prompt: 'Once', n, max_tokens: 400, stream: streamed }
              : { model: 'm', messages: [{ role: 'user', content: 'Hi' }], n, max_tokens: 400, stream: streamed };
          const hostile = post(route, body, ac.signal)
            .then((r) => r.text())
            .catch(() => undefined);
          setTimeout(() => ac.abort(), after);
          const [text] = await Promise.all([controlText(), hostile]);
          expect(text).toBe(reference);
        },
      ),
      { numRuns: 40 },
    );
    await new Promise((r) => setTimeout(r, 50));
    expect(unhandled).toEqual([]);
    for (let i = 0; i < 200 && engine.stats().running > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(engine.stats().running).toBe(0);
    expect(await controlText()).toBe(reference);
  });
});

describe('safetensors header properties', () => {
  it('arbitrary bytes, and valid files with bytes flipped or cut, only ever raise CheckpointError', async () => {
    const { readFileSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { readSafetensorsHeader } = await import('../lib/checkpoint/safetensors.js');
    const { CheckpointError } = await import('../lib/errors.js');
    const { fixtures } = await import('./helpers/checkpoint.js');
    const seed = readFileSync(join(fixtures, 'tiny-b', 'original', 'model.safetensors'));
    const headerEnd = 8 + Number(seed.readBigUInt64LE(0));
    const dir = tmpDir();
    let n = 0;
    const check = async (bytes: Uint8Array) => {
      const f = join(dir, `f${n++}.safetensors`);
      writeFileSync(f, bytes);
      try {
        await readSafetensorsHeader(f);
      } catch (e) {
        expect(e).toBeInstanceOf(CheckpointError);
      }
    };
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 64 }), check), { numRuns: 200 });
    // Mutations of a real file: flips inside the header, a different length, truncation.
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 0, max: headerEnd - 1 }), fc.integer({ min: 0, max: 255 })), {
          maxLength: 8,
        }),
        fc.integer({ min: 1, max: seed.length }),
        fc.option(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
        async (flips, cut, length) => {
          const b = Buffer.from(seed.subarray(0, cut));
          for (const [i, v] of flips) if (i < b.length) b[i] = v;
          if (length !== null && b.length >= 8) b.writeBigUInt64LE(length, 0);
          await check(b);
        },
      ),
      { numRuns: 300 },
    );
  });
});
