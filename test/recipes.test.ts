// The README's recipes for clients that speak only the OpenAI protocol, run as written there:
// the `openai` client and LangChain's ChatOpenAI pointed at `gptoss serve` by base URL.
import { ChatOpenAI } from '@langchain/openai';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';

import { createEngine, type Engine, loadModel, type Model } from '../lib/index.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';
import { TOKENS } from '../lib/chat/tokenizer.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

let model: Model;
let engine: Engine;
let server: RunningServer;
let baseURL: string;
const MODEL = 'openai/gpt-oss-20b';

beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(17));
  engine = await createEngine({ model, maxSequences: 4, maxContext: 1024 });
  server = await listen(createApp(engine, { modelId: MODEL }), { port: 0 });
  baseURL = `${server.url}/v1`;
});
afterAll(async () => {
  await server?.close();
  await engine?.close({ abort: true });
  model?.dispose();
});

// The random model's reasoning never ends by itself; a real model needs none of this.
const endReasoning = { [TOKENS.end]: 100 };

describe('the openai client', () => {
  it('chat with reasoning kept apart, then structured output', async () => {
    const client = new OpenAI({ baseURL, apiKey: 'unused' });
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Hello' }],
      max_tokens: 20,
      reasoning_effort: 'low',
    });
    const msg = r.choices[0].message as (typeof r.choices)[0]['message'] & { reasoning_content?: string | null };
    expect(typeof (msg.content ?? '')).toBe('string');
    expect(msg).toHaveProperty('reasoning_content');

    const Answer = z.object({ city: z.enum(['Oslo', 'Bergen']), population: z.number().int().min(0).max(2_000_000) });
    const { zodResponseFormat } = await import('openai/helpers/zod');
    const parsed = await client.chat.completions.parse({
      model: MODEL,
      messages: [{ role: 'user', content: 'Largest city in Norway?' }],
      max_tokens: 200,
      seed: 1,
      logit_bias: endReasoning,
      response_format: zodResponseFormat(Answer, 'answer'),
    });
    expect(Answer.parse(parsed.choices[0].message.parsed)).toEqual(parsed.choices[0].message.parsed);
  });
});

describe("LangChain's ChatOpenAI", () => {
  const llm = (extra: object = {}) =>
    new ChatOpenAI({ model: MODEL, apiKey: 'unused', configuration: { baseURL }, maxTokens: 24, ...extra });

  it('invoke and stream', async () => {
    const msg = await llm({ temperature: 0 }).invoke('Hello there');
    expect(typeof msg.content).toBe('string');
    let streamed = '';
    for await (const chunk of await llm({ temperature: 0 }).stream('Hello there')) streamed += chunk.content as string;
    expect(streamed).toBe(msg.content);
  });

  it('withStructuredOutput: a zod schema through response_format json_schema', async () => {
    const Order = z.object({ item: z.enum(['tea', 'coffee']), qty: z.number().int().min(1).max(3) });
    const structured = llm({ maxTokens: 200, seed: 2, modelKwargs: { logit_bias: endReasoning } }).withStructuredOutput(
      Order,
      { method: 'jsonSchema' },
    );
    const out = await structured.invoke('One tea please');
    expect(Order.parse(out)).toEqual(out);
  });

  it('bindTools with a forced tool: the call arrives parsed', async () => {
    const weather = {
      name: 'weather',
      description: 'Weather for a city',
      schema: z.object({ city: z.enum(['Paris', 'Oslo']) }),
    };
    const withTools = llm({ maxTokens: 200, seed: 3, modelKwargs: { logit_bias: endReasoning } }).bindTools([weather], {
      tool_choice: 'weather',
      strict: true,
    });
    const msg = await withTools.invoke('Weather in Oslo?');
    expect(msg.tool_calls?.[0]?.name).toBe('weather');
    expect(['Paris', 'Oslo']).toContain(msg.tool_calls?.[0]?.args.city);
  });
});
