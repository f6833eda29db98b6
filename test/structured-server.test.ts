// Structured output through the server, as the official openai client sends it: response_format
// on chat completions (also streamed, and through the client's own parse() helper), text.format
// on responses, strict tools, and a 400 naming a schema feature the grammar cannot enforce.
import { Ajv2020 } from 'ajv/dist/2020.js';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';

import { createEngine, type Engine, loadModel, type Model } from '../lib/index.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';
import { TOKENS } from '../lib/chat/tokenizer.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';
import { SCHEMAS } from './helpers/schemas.js';

let model: Model;
let engine: Engine;
let server: RunningServer;
let client: OpenAI;
const MODEL = 'tiny-gpt-oss';

beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(21));
  engine = await createEngine({ model, maxSequences: 8, maxBatchTokens: 128, maxContext: 512, pageSize: 8 });
  server = await listen(createApp(engine, { modelId: MODEL }), { port: 0 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.close({ abort: true });
  model?.dispose();
});

const ajv = new Ajv2020({ strict: true, strictTuples: false });
// The random model's reasoning would never end by itself (see structured.test.ts).
const endReasoning = { logit_bias: { [TOKENS.end]: 100 } };
const messages = [{ role: 'user' as const, content: 'Reply in JSON.' }];

describe('chat completions', () => {
  it('response_format json_schema: every choice validates, n > 1 included', async () => {
    const validate = ajv.compile(SCHEMAS.nested);
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 200,
      seed: 3,
      n: 3,
      ...endReasoning,
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'nested', schema: SCHEMAS.nested as Record<string, unknown>, strict: true },
      },
    });
    expect(r.choices).toHaveLength(3);
    for (const c of r.choices) {
      expect(c.finish_reason).toBe('stop');
      expect(validate(JSON.parse(c.message.content!)), c.message.content!).toBe(true);
    }
  });

  it('streamed, the concatenated deltas validate', async () => {
    const validate = ajv.compile(SCHEMAS.refs);
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 200,
      seed: 5,
      stream: true,
      ...endReasoning,
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'refs', schema: SCHEMAS.refs as Record<string, unknown> },
      },
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(validate(JSON.parse(text)), text).toBe(true);
  });

  it("the client's parse() helper with a zod schema gets a typed object", async () => {
    const Item = z.object({
      name: z.enum(['tea', 'milk']),
      count: z.number().int().min(1).max(9),
      urgent: z.boolean(),
    });
    const r = await client.chat.completions.parse({
      model: MODEL,
      messages,
      max_tokens: 200,
      seed: 2,
      ...endReasoning,
      response_format: zodResponseFormat(Item, 'item'),
    });
    const parsed = r.choices[0].message.parsed!;
    expect(Item.parse(parsed)).toEqual(parsed);
  });

  it('a strict tool named by tool_choice is called with arguments that validate', async () => {
    const params = {
      type: 'object',
      properties: { city: { enum: ['Paris', 'Oslo'] }, unit: { enum: ['C', 'F'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    };
    const validate = ajv.compile(params);
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 200,
      seed: 1,
      ...endReasoning,
      tools: [{ type: 'function', function: { name: 'weather', parameters: params, strict: true } }],
      tool_choice: { type: 'function', function: { name: 'weather' } },
    });
    const call = r.choices[0].message.tool_calls![0];
    expect(r.choices[0].finish_reason).toBe('tool_calls');
    expect(call.type === 'function' && call.function.name).toBe('weather');
    expect(call.type === 'function' && validate(JSON.parse(call.function.arguments))).toBe(true);
  });

  it('a schema feature the grammar cannot enforce is a 400 that names it', async () => {
    const err = await client.chat.completions
      .create({
        model: MODEL,
        messages,
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'x', schema: { type: 'array', items: { type: 'integer' }, uniqueItems: true } },
        },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).message).toMatch(
      /response_format\.json_schema\.schema: JSON Schema keyword "uniqueItems"/,
    );
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('unsupported');
  });
});

describe("a request's schemas together", () => {
  it('past the budget of subschemas (response format and strict tools), a 400 naming it', async () => {
    const chain = (n: number) => ({
      $defs: Object.fromEntries(
        Array.from({ length: n }, (_, i) => [`d${i}`, i < n - 1 ? { $ref: `#/$defs/d${i + 1}` } : { type: 'object' }]),
      ),
      $ref: '#/$defs/d0',
    });
    const r = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: MODEL,
        messages,
        max_tokens: 2,
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: chain(4000) } },
        tools: [0, 1].map((i) => ({
          type: 'function',
          function: { name: `t${i}`, strict: true, parameters: chain(4000) },
        })),
      }),
    });
    expect(r.status).toBe(400);
    const body = await r.json();
    expect(body.error.code).toBe('unsupported');
    expect(body.error.message).toMatch(
      /^tools\[1\]\.parameters: the request's schemas \(response format and strict tools together\) hold more than 10000 subschemas/,
    );
  });
});

describe('responses', () => {
  it('text.format json_schema: output_text validates', async () => {
    const validate = ajv.compile(SCHEMAS.person);
    const r = await client.responses.create({
      model: MODEL,
      input: 'Reply in JSON.',
      max_output_tokens: 200,
      text: {
        format: {
          type: 'json_schema',
          name: 'person',
          schema: SCHEMAS.person as Record<string, unknown>,
          strict: true,
        },
      },
      // logit_bias is not part of the Responses API; the server accepts it as an extension.
      ...({ logit_bias: endReasoning.logit_bias, seed: 4 } as object),
    });
    expect(validate(JSON.parse(r.output_text)), r.output_text).toBe(true);
  });
});
