// Property-based tests (fast-check) of the surfaces that read input we do not control: the
// tokenizer, the Harmony streaming parser and every server route.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, getTokenizer, GptOssError, loadModel, type Model } from '../lib/index.js';
import { parseMessagesFromCompletionTokens, StreamableParser } from '../lib/harmony/index.js';
import { createApp } from '../lib/server.js';
import { tinyRealVocabCheckpoint, tmpDir } from './helpers/checkpoint.js';

const tok = getTokenizer();

describe('tokenizer properties', () => {
  it('decode(encode(s)) == s for arbitrary Unicode', () => {
    // A leading U+FEFF was once dropped by the decoder (taken for a byte-order mark).
    fc.assert(fc.property(fc.string({ unit: 'grapheme' }), (s) => tok.decode(tok.encode(s)) === s), { numRuns: 500, examples: [['\uFEFFabc'], ['\uFEFF']] });
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => tok.decode(tok.encode(s)) === s), { numRuns: 500 });
  });

  it('the stream decoder joins to the same text however tokens arrive', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const d = tok.streamDecoder();
        return tok.encode(s).map((t) => d.push(t)).join('') + d.flush() === s;
      }),
      { numRuns: 300, examples: [['\uFEFF🦀']] },
    );
  });
});

describe('Harmony streaming parser properties', () => {
  // Token soup: framing specials, header words, text, and random ids.
  const special = fc.constantFrom(200002, 200003, 200005, 200006, 200007, 200008, 200012);
  const word = fc.constantFrom(...['assistant', 'analysis', 'final', 'commentary', ' to=functions.f', ' json', 'user', 'Hello', ' world', '{"a":1}', '🦀'].flatMap((w) => tok.encode(w)));
  const token = fc.oneof({ weight: 3, arbitrary: special }, { weight: 4, arbitrary: word }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 201087 }) });

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
      await fc.assert(fc.asyncProperty(fc.json(), (j) => check(route, j)), { numRuns: 150 });
  });

  it('valid requests with one field replaced by anything get a 2xx or a 4xx, never a 5xx', async () => {
    for (const [route, base] of Object.entries(valid)) {
      const keys = [...Object.keys(base), 'temperature', 'top_p', 'stop', 'seed', 'stream', 'tools', 'tool_choice', 'reasoning_effort', 'n', 'logit_bias', 'max_completion_tokens', 'instructions', 'reasoning'];
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

describe('safetensors header properties', () => {
  it('arbitrary bytes, and valid files with bytes flipped or cut, only ever raise CheckpointError', async () => {
    const { readFileSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { readSafetensorsHeader } = await import('../lib/safetensors.js');
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
        fc.array(fc.tuple(fc.integer({ min: 0, max: headerEnd - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
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
