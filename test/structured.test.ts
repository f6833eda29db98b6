// Structured output on a random model with the real vocabulary: left to itself it writes no
// Harmony structure and no JSON, so every valid document below is the constraint's work. A bias
// on <|end|> makes its reasoning (free text) end at once; inside constrained parts the mask wins.
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  checkSchema,
  getTokenizer,
  InvalidArgumentError,
  loadModel,
  type Model,
  toHarmony,
  UnsupportedError,
} from '../lib/index.js';
import { chatConstraint, SchemaBudget } from '../lib/chat/structured.js';
import { TOKENS } from '../lib/chat/tokenizer.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';
import { SCHEMAS } from './helpers/schemas.js';

let model: Model;
beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(5, { window: 8 }));
});
afterAll(() => model?.dispose());

const ajv = new Ajv2020({ strict: true, strictTuples: false, allErrors: true });
const endReasoning = { logitBias: { [TOKENS.end]: 100 } };

describe('structured output (responseFormat)', () => {
  for (const [name, schema] of Object.entries(SCHEMAS))
    it(`every answer validates: ${name}`, async () => {
      const validate = ajv.compile(schema);
      for (let seed = 0; seed < 3; seed++) {
        const r = await model
          .chat([{ role: 'user', content: 'Answer in JSON.' }], {
            maxTokens: 200,
            seed,
            ...endReasoning,
            responseFormat: { type: 'json_schema', name, schema },
          })
          .result();
        expect(r.finishReason, JSON.stringify(r.text)).toBe('stop');
        const doc = JSON.parse(r.text);
        expect(validate(doc), `${r.text}: ${ajv.errorsText(validate.errors)}`).toBe(true);
      }
    });

  it('without the format the same model writes no JSON at all', async () => {
    for (let seed = 0; seed < 3; seed++) {
      const r = await model.chat([{ role: 'user', content: 'Answer in JSON.' }], { maxTokens: 40, seed }).result();
      expect(r.finishReason).toBe('length');
      expect(() => JSON.parse(getTokenizer().decode(r.tokens))).toThrow();
      expect(() => JSON.parse(r.text)).toThrow();
    }
  });

  it('json_object gives a JSON object', async () => {
    // Any object: bounded here by a bias towards closing it, which the mask still overrides.
    const close = getTokenizer().encode('}')[0];
    const r = await model
      .chat([{ role: 'user', content: 'JSON please' }], {
        maxTokens: 200,
        seed: 1,
        logitBias: { [TOKENS.end]: 100, [close]: 30 },
        responseFormat: { type: 'json_object' },
      })
      .result();
    expect(r.finishReason).toBe('stop');
    const doc = JSON.parse(r.text);
    expect(typeof doc === 'object' && doc !== null && !Array.isArray(doc)).toBe(true);
  });

  it('reasoning stays free and the turn keeps the Harmony structure', async () => {
    // No bias: the model reasons (random text) until the token budget runs out, inside a proper header.
    const tok = getTokenizer();
    let reasoned = 0;
    for (let seed = 0; seed < 6; seed++) {
      const r = await model
        .chat([{ role: 'user', content: 'Think first.' }], {
          maxTokens: 20,
          seed,
          responseFormat: { type: 'json_schema', schema: SCHEMAS.person },
        })
        .result();
      expect(r.tokens[0]).toBe(TOKENS.channel);
      const header = tok.decode(r.tokens.slice(1, r.tokens.indexOf(TOKENS.message)));
      expect(['analysis', 'final']).toContain(header);
      if (header === 'analysis') {
        reasoned++;
        expect(r.reasoning.length).toBeGreaterThan(0);
        expect(() => JSON.parse(r.reasoning)).toThrow();
      }
    }
    expect(reasoned).toBeGreaterThan(0);
  });

  it('the prompt carries the schema under # Response Formats', async () => {
    const { toHarmony } = await import('../lib/index.js');
    const { renderConversation } = await import('../lib/chat/harmony/index.js');
    const text = getTokenizer().decode(
      renderConversation(
        toHarmony([{ role: 'user', content: 'x' }], {
          instructions: 'Be brief.',
          responseFormat: { type: 'json_schema', name: 'person', description: 'A person.', schema: SCHEMAS.person },
        }),
      ),
    );
    expect(text).toContain(
      `# Instructions\n\nBe brief.\n\n# Response Formats\n\n## person\n\n// A person.\n${JSON.stringify(SCHEMAS.person)}<|end|>`,
    );
  });
});

describe('tools', () => {
  const weather = {
    type: 'object',
    properties: { city: { enum: ['Paris', 'Oslo'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
    required: ['city', 'days'],
    additionalProperties: false,
  };

  it("tool_choice 'required' with a strict tool: a call whose arguments validate", async () => {
    const validate = ajv.compile(weather);
    for (let seed = 0; seed < 3; seed++) {
      const r = await model
        .chat([{ role: 'user', content: 'Weather?' }], {
          maxTokens: 200,
          seed,
          ...endReasoning,
          tools: [
            { name: 'get_weather', strict: true, parameters: weather },
            { name: 'other', parameters: { type: 'object' } },
          ],
          toolChoice: { name: 'get_weather' },
        })
        .result();
      expect(r.finishReason).toBe('tool-calls');
      expect(r.toolCalls).toHaveLength(1);
      expect(r.toolCalls[0].name).toBe('get_weather');
      expect(validate(r.toolCalls[0].arguments), r.toolCalls[0].rawArguments).toBe(true);
    }
  });

  it("tool_choice 'none' with tools: the turn ends with an answer, never a call", async () => {
    const r = await model
      .chat([{ role: 'user', content: 'Weather?' }], {
        maxTokens: 60,
        seed: 2,
        logitBias: { [TOKENS.end]: 100, [TOKENS.return]: 20 },
        tools: [{ name: 'get_weather', parameters: weather }],
        toolChoice: 'none',
      })
      .result();
    expect(r.toolCalls).toHaveLength(0);
    expect(r.finishReason).toBe('stop');
  });

  it('tool_choice naming an unknown tool, or required without tools, is refused', () => {
    expect(() => model.chat([{ role: 'user', content: 'x' }], { toolChoice: 'required' })).toThrow(
      InvalidArgumentError,
    );
    expect(() =>
      model.chat([{ role: 'user', content: 'x' }], { tools: [{ name: 'a' }], toolChoice: { name: 'b' } }),
    ).toThrow(/unknown tool "b"/);
  });
});

describe('the turn constraint, token by token', () => {
  const tok = () => getTokenizer();
  const allowed = (m: Int32Array | null, id: number) => m === null || ((m[id >>> 5] >>> (id & 31)) & 1) === 1;
  const feed = async (c: NonNullable<ReturnType<typeof chatConstraint>>, ids: number[]) => {
    for (const id of ids) {
      await c.prepare();
      expect(allowed(c.mask, id), `token ${id} (${JSON.stringify(tok().decode([id]))}) should be allowed`).toBe(true);
      c.accept(id);
    }
    await c.prepare();
  };
  const weather = {
    type: 'object',
    properties: { city: { enum: ['Paris', 'Oslo'] } },
    required: ['city'],
    additionalProperties: false,
  };

  it('with strict tools only, text is free until a call to a strict tool opens; then its arguments are held to the schema', async () => {
    const c = chatConstraint(undefined, new Map([['weather', weather]]), ['weather', 'other'], 'auto', 201088)!;
    // Free reasoning, in the model's own header form.
    await feed(c, [
      TOKENS.channel,
      ...tok().encode('analysis'),
      TOKENS.message,
      ...tok().encode('I should call it.'),
      TOKENS.end,
    ]);
    expect(c.mask).toBeNull();
    await feed(c, [
      TOKENS.start,
      ...tok().encode('assistant'),
      TOKENS.channel,
      ...tok().encode('commentary to=functions.weather '),
      TOKENS.constrain,
      ...tok().encode('json'),
      TOKENS.message,
    ]);
    expect(c.mask).not.toBeNull();
    expect(allowed(c.mask, tok().encode('{"')[0])).toBe(true);
    expect(allowed(c.mask, tok().encode('hello')[0])).toBe(false);
    await feed(c, tok().encode('{"city": "Oslo"}'));
    expect([...Array(201088).keys()].filter((id) => allowed(c.mask, id))).toEqual([TOKENS.call]);
    c.accept(TOKENS.call);
    await c.prepare();
    expect(c.mask).toBeNull(); // the turn is over
    c.dispose();
  });

  it('a call to a tool that is not strict stays free', async () => {
    const c = chatConstraint(undefined, new Map([['weather', weather]]), ['weather', 'other'], 'auto', 201088)!;
    await feed(c, [
      TOKENS.channel,
      ...tok().encode('commentary to=functions.other '),
      TOKENS.constrain,
      ...tok().encode('json'),
      TOKENS.message,
    ]);
    expect(c.mask).toBeNull();
    c.dispose();
  });

  it('with a response format the headers are forced: after reasoning only the answer (or a call) may follow', async () => {
    const c = chatConstraint({ type: 'object' }, new Map(), [], 'auto', 201088)!;
    await c.prepare();
    expect([...Array(201088).keys()].filter((id) => allowed(c.mask, id))).toEqual([TOKENS.channel]);
    await feed(c, [TOKENS.channel, ...tok().encode('analysis'), TOKENS.message, ...tok().encode('hmm'), TOKENS.end]);
    // The only way on is `<|start|>assistant<|channel|>final<|message|>`.
    for (const id of [
      TOKENS.start,
      ...tok().encode('assistant'),
      TOKENS.channel,
      ...tok().encode('final'),
      TOKENS.message,
    ]) {
      expect([...Array(201088).keys()].filter((x) => allowed(c.mask, x))).toEqual([id]);
      c.accept(id);
      await c.prepare();
    }
    expect(allowed(c.mask, TOKENS.return)).toBe(false); // an empty answer is not an object
    c.dispose();
  });
});

describe('checkSchema', () => {
  it.each([
    [{ type: 'array', uniqueItems: true }, /"uniqueItems" \(at #\)/],
    [{ type: 'object', properties: { n: { type: 'integer', multipleOf: 3 } } }, /"multipleOf" \(at #\/properties\/n\)/],
    [{ oneOf: [{ type: 'string' }, { type: 'integer' }] }, /"oneOf"/],
    [{ not: { type: 'string' } }, /"not"/],
    [{ type: 'object', patternProperties: { '^a': {} } }, /"patternProperties"/],
    [{ type: 'string', format: 'credit-card' }, /format "credit-card"/],
    [{ $ref: 'https://example.com/s.json' }, /\$ref/],
    [{ allOf: [{ type: 'object' }, { required: ['a'] }] }, /allOf with more than one/],
    [{ type: 'string', pattern: '^[a-z]+$', maxLength: 4 }, /"pattern" together with "maxLength"/],
    [{ type: 'string', pattern: '^(?!x)[a-z]$' }, /lookahead/],
    [{ type: 'string', pattern: '^(a)\\1$' }, /backreferences/],
    [{ type: 'string', pattern: '^a$|^b$' }, /only at the pattern's start and end/],
  ])('refuses what the grammar cannot enforce: %j', (schema, message) => {
    expect(() => checkSchema(schema, 'response_format')).toThrow(UnsupportedError);
    expect(() => checkSchema(schema, 'response_format')).toThrow(message);
  });

  it.each([
    [{ type: 'strin' }, /JSON types/],
    [{ type: 'string', pattern: '(' }, /not a regular expression/],
    [{ type: 'object', required: 'a' }, /not a valid JSON Schema/],
    [[1, 2], /must be an object/],
  ])('refuses what is not a schema: %j', (schema, message) => {
    expect(() => checkSchema(schema, 'response_format')).toThrow(InvalidArgumentError);
    expect(() => checkSchema(schema, 'response_format')).toThrow(message);
  });

  it('accepts the schemas tested above', () => {
    for (const s of Object.values(SCHEMAS)) expect(() => checkSchema(s, 'x')).not.toThrow();
  });

  /** $defs d0 -> d1 -> ... -> d(n-1), the last a string (or back to d0: no way out). */
  const chain = (n: number, o: { reversed?: boolean; cycle?: boolean } = {}) => {
    const order = [...Array(n).keys()];
    if (o.reversed) order.reverse();
    const defs = Object.fromEntries(
      order.map((i) => [
        `d${i}`,
        i < n - 1 ? { $ref: `#/$defs/d${i + 1}` } : o.cycle ? { $ref: '#/$defs/d0' } : { type: 'string' },
      ]),
    );
    return { $defs: defs, $ref: '#/$defs/d0' };
  };

  it('whether a schema admits a document is found in linear time, whatever the order of its $defs', () => {
    checkSchema({ type: 'object' }, 'warm-up');
    for (const reversed of [false, true]) {
      const t0 = performance.now();
      checkSchema(chain(4998, { reversed }), 'x');
      // A fixed point over the $defs took 1.3-1.9 s for this chain (5.9 s on a loaded machine).
      expect(performance.now() - t0, `reversed ${reversed}, ms`).toBeLessThan(1000);
    }
    expect(() => checkSchema(chain(4998, { cycle: true }), 'x')).toThrow(/admits no finite document/);
  });

  it('a schema passed once is not walked again unless it changed', () => {
    const s = chain(4998);
    let t0 = performance.now();
    checkSchema(s, 'x');
    const first = performance.now() - t0;
    t0 = performance.now();
    checkSchema(s, 'x');
    expect(performance.now() - t0).toBeLessThan(first);
    // Changed since: checked afresh, and refused.
    (s.$defs as Record<string, unknown>).d4997 = { type: 'string', uniqueItems: true };
    expect(() => checkSchema(s, 'x')).toThrow(/"uniqueItems"/);
  });

  it("a request's schemas share one budget of subschemas, refused with a message naming it", () => {
    const budget = new SchemaBudget();
    const a = chain(4998); // 4,999 subschemas with its root
    checkSchema(a, 'responseFormat.schema', budget);
    checkSchema(chain(4998), 'tools[0].parameters', budget);
    expect(budget.used).toBe(9998);
    // Checked before (the walk is skipped), yet still counted.
    expect(() => checkSchema(a, 'tools[1].parameters', budget)).toThrow(
      /tools\[1\]\.parameters: the request's schemas \(response format and strict tools together\) hold more than 10000 subschemas/,
    );
    expect(() => checkSchema(chain(10), 'tools[2].parameters', budget)).toThrow(UnsupportedError);
    expect(() => checkSchema(chain(10), 'x', new SchemaBudget())).not.toThrow();
  });

  it('at most 128 tools', () => {
    const tools = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `t${i}` }));
    expect(() => toHarmony([{ role: 'user', content: 'x' }], { tools: tools(128) })).not.toThrow();
    expect(() => toHarmony([{ role: 'user', content: 'x' }], { tools: tools(129) })).toThrow(
      /at most 128 tools are supported, got 129/,
    );
  });

  it('a model without the o200k vocabulary refuses a format with a typed error', async () => {
    const small = await loadModel(new URL('./fixtures/tiny-a/hf', import.meta.url).pathname);
    try {
      expect(small.config.vocabSize).not.toBe(201088);
      await expect(
        small
          .chat([{ role: 'user', content: 'x' }], { maxTokens: 2, responseFormat: { type: 'json_object' } })
          .result(),
      ).rejects.toThrow(UnsupportedError);
      expect(small.sessionCount).toBe(0);
    } finally {
      small.dispose();
    }
  });
});
