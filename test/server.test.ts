// The server as clients see it: the official `openai` npm client against it on loopback, raw HTTP
// for malformed requests, and a load test of concurrent streaming clients with random aborts.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type Engine, loadModel, type Model } from '../lib/index.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

let model: Model;
let engine: Engine;
let server: RunningServer;
let client: OpenAI;
const MODEL = 'tiny-gpt-oss';
const KEY = 'sk-test';

beforeAll(async () => {
  const dir = tinyRealVocabCheckpoint(21);
  model = await loadModel(dir);
  engine = await createEngine({ model, maxSequences: 32, maxBatchTokens: 128, maxContext: 512, pageSize: 8 });
  server = await listen(createApp(engine, { modelId: MODEL, apiKey: KEY, maxBodyBytes: 64 * 1024 }), { port: 0 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.close({ abort: true });
  model?.dispose();
});

const post = (path: string, body: string, headers: Record<string, string> = {}) =>
  fetch(`${server.url}${path}`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers },
  });

describe('the official openai client', () => {
  it('lists the model', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL]);
  });

  it('chat completions without streaming', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Hello' }],
      max_tokens: 8,
      seed: 1,
    });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message.role).toBe('assistant');
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.usage?.completion_tokens).toBe(8);
    expect(typeof r.choices[0].message.content).toBe('string');
  });

  it('chat completions with streaming give the same text, and usage when asked', async () => {
    const args = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'Stream please' }],
      max_tokens: 10,
      seed: 7,
      temperature: 0.8,
    };
    const whole = await client.chat.completions.create(args);
    const stream = await client.chat.completions.create({
      ...args,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '',
      finish: string | null = null,
      usage;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(whole.choices[0].message.content);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ completion_tokens: 10 });
  });

  it('tools, reasoning effort and a tool-call history are accepted', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      reasoning_effort: 'high',
      tools: [
        {
          type: 'function',
          function: {
            name: 'get_weather',
            description: 'Weather now.',
            parameters: { type: 'object', properties: { city: { type: 'string' } } },
          },
        },
      ],
      messages: [
        { role: 'user', content: 'Weather in Oslo?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: '{"temp":3}' },
      ],
      max_tokens: 4,
    });
    expect(r.usage?.completion_tokens).toBe(4);
  });

  it('completions from text and from token ids, with and without streaming', async () => {
    const a = await client.completions.create({
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 5,
      temperature: 0,
    });
    expect(a.choices[0].text.length).toBeGreaterThan(0);
    expect(a.usage?.completion_tokens).toBe(5);
    const b = await client.completions.create({ model: MODEL, prompt: [1, 2, 3, 4], max_tokens: 5, temperature: 0 });
    const s = await client.completions.create({
      model: MODEL,
      prompt: [1, 2, 3, 4],
      max_tokens: 5,
      temperature: 0,
      stream: true,
    });
    let text = '';
    for await (const c of s) text += c.choices[0]?.text ?? '';
    expect(text).toBe(b.choices[0].text);
  });

  it('errors arrive as OpenAI errors with the right status', async () => {
    await expect(
      client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    ).rejects.toMatchObject({ status: 404 });
    await expect(
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], n: 9 }),
    ).rejects.toMatchObject({ status: 400 });
    const bad = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401 });
  });
});

describe('malformed requests', () => {
  const expectError = async (res: Response, status: number, param?: string) => {
    expect(res.status).toBe(status);
    const b = (await res.json()) as { error: { message: string; type: string; param: string | null } };
    expect(typeof b.error.message).toBe('string');
    expect(typeof b.error.type).toBe('string');
    if (param) expect(b.error.param).toBe(param);
  };

  it('bad JSON, wrong types, out-of-range values, unknown model, too long, too big: 4xx with an error object', async () => {
    await expectError(await post('/v1/chat/completions', '{not json'), 400);
    await expectError(
      await post('/v1/chat/completions', JSON.stringify({ model: MODEL, messages: 'hi' })),
      400,
      'messages',
    );
    await expectError(
      await post(
        '/v1/chat/completions',
        JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x' }], temperature: 5 }),
      ),
      400,
      'temperature',
    );
    await expectError(
      await post(
        '/v1/chat/completions',
        JSON.stringify({ model: MODEL, messages: [{ role: 'wizard', content: 'x' }] }),
      ),
      400,
    );
    await expectError(
      await post(
        '/v1/chat/completions',
        JSON.stringify({ model: 'other', messages: [{ role: 'user', content: 'x' }] }),
      ),
      404,
      'model',
    );
    await expectError(
      await post(
        '/v1/chat/completions',
        JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'word '.repeat(600) }] }),
      ),
      400,
    );
    await expectError(
      await post(
        '/v1/chat/completions',
        JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x'.repeat(70000) }] }),
      ),
      413,
    );
    await expectError(await post('/v1/completions', JSON.stringify({ model: MODEL, prompt: [5, 999999] })), 400);
    await expectError(
      await post(
        '/v1/chat/completions',
        JSON.stringify({ model: MODEL, messages: [{ role: 'tool', content: 'x', name: 'ghost' }] }),
      ),
      400,
    );
  });

  it('the API key is needed everywhere but /health', async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    expect((await fetch(`${server.url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
  });

  it('metrics are Prometheus text', async () => {
    const t = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
    expect(t).toMatch(/gptoss_generated_tokens_total \d+/);
    expect(t).toMatch(/gptoss_kv_pages_used \d+/);
    expect(t).toMatch(/gptoss_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+/);
  });
});

describe('load', () => {
  it('a client that disconnects mid-stream cancels its sequence', async () => {
    const ac = new AbortController();
    const res = await post(
      '/v1/completions',
      JSON.stringify({ model: MODEL, prompt: [1, 2, 3], max_tokens: 400, stream: true }),
      {},
    );
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    ac.abort();
    for (let i = 0; i < 100 && engine.stats().running > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(engine.stats().running).toBe(0);
    expect(engine.stats().kvPagesUsed).toBe(0);
  });

  it('32 concurrent streaming clients with mixed lengths and random aborts: each completed output equals the same request alone', async () => {
    const N = 40;
    const req = (i: number) => ({
      prompt: Array.from({ length: 2 + ((i * 13) % 50) }, (_, j) => (i * 7919 + j * 104729) % 199000),
      max_tokens: 4 + ((i * 5) % 20),
      seed: i,
      temperature: i % 3 === 0 ? 0 : 1,
    });
    const alone = new Map<number, string>();
    for (let i = 0; i < N; i++) {
      const r = req(i);
      alone.set(
        i,
        (
          await model
            .complete(r.prompt, { maxTokens: r.max_tokens, seed: r.seed, temperature: r.temperature, stopTokens: [] })
            .result()
        ).text,
      );
    }
    const run = async (i: number) => {
      const ac = new AbortController();
      const abortMe = i % 5 === 4;
      const stream = await client.completions.create({ model: MODEL, ...req(i), stream: true }, { signal: ac.signal });
      let text = '',
        n = 0;
      try {
        for await (const c of stream) {
          text += c.choices[0]?.text ?? '';
          if (abortMe && ++n === 2) ac.abort();
        }
      } catch (e) {
        if (!abortMe) throw e;
        return 'aborted';
      }
      return abortMe ? 'aborted' : text;
    };
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: N }, (_, i) => run(i)));
    expect(Date.now() - t0).toBeLessThan(60000);
    results.forEach((r, i) => {
      if (r !== 'aborted') expect(r).toBe(alone.get(i));
    });
    expect(results.filter((r) => r !== 'aborted').length).toBeGreaterThanOrEqual(32);
    for (let i = 0; i < 100 && engine.stats().running > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(engine.stats()).toMatchObject({ running: 0, queued: 0, kvPagesUsed: 0 });
  });
});

describe('the Responses API with the official client', () => {
  it('answers a string input without streaming', async () => {
    const r = await client.responses.create({
      model: MODEL,
      input: 'Hello',
      max_output_tokens: 6,
      reasoning: { effort: 'low' },
    });
    expect(r.object).toBe('response');
    expect(r.status).toBe('incomplete'); // stopped by max_output_tokens
    expect(r.usage?.output_tokens).toBe(6);
    expect(typeof r.output_text).toBe('string');
  });

  it('streams the event sequence the SDK checks, ending in the same response', async () => {
    const input = [
      { role: 'developer' as const, content: 'Be brief.' },
      { role: 'user' as const, content: 'Weather in Oslo?' },
      { type: 'function_call' as const, call_id: 'c1', name: 'get_weather', arguments: '{"city":"Oslo"}' },
      { type: 'function_call_output' as const, call_id: 'c1', output: '{"temp":3}' },
    ];
    const tools = [
      {
        type: 'function' as const,
        name: 'get_weather',
        description: 'Weather now.',
        parameters: { type: 'object', properties: { city: { type: 'string' } } },
        strict: false,
      },
    ];
    const stream = client.responses.stream({ model: MODEL, input, tools, max_output_tokens: 8, temperature: 0 });
    const types: string[] = [];
    for await (const ev of stream) types.push(ev.type);
    const final = await stream.finalResponse();
    expect(types[0]).toBe('response.created');
    expect(types.at(-1)).toMatch(/^response\.(completed|incomplete)$/);
    expect(final.usage?.output_tokens).toBe(8);
    const plain = await client.responses.create({ model: MODEL, input, tools, max_output_tokens: 8, temperature: 0 });
    expect(final.output_text).toBe(plain.output_text);
  });

  it('refuses what a stateless server cannot do, with a 400', async () => {
    await expect(
      client.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_1' }),
    ).rejects.toMatchObject({ status: 400 });
  });
});

describe('tool history, metrics routes, logprobs and n answers', () => {
  it("tool_choice 'none' accepts a conversation with earlier tool calls", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      tool_choice: 'none',
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }],
      messages: [
        { role: 'user', content: 'Weather?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
      ],
      max_tokens: 2,
    });
    expect(r.usage?.completion_tokens).toBe(2);
  });

  it('metrics count routes, not the paths clients choose', async () => {
    await fetch(`${server.url}/v1/some-path-nobody-has-${Date.now()}`, { headers: { authorization: `Bearer ${KEY}` } });
    await fetch(`${server.url}/v1/x"y`);
    const t = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text();
    expect(t).not.toMatch(/some-path-nobody-has/);
    expect(t).not.toContain('x"y');
  });
});

describe('logprobs over HTTP', () => {
  it('completions report OpenAI-shaped logprobs with N alternatives, streamed or not', async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: [5, 6, 7],
      max_tokens: 4,
      temperature: 0,
      logprobs: 2,
    });
    const lp = r.choices[0].logprobs!;
    expect(lp.tokens).toHaveLength(4);
    expect(lp.token_logprobs!.every((x) => x <= 0)).toBe(true);
    expect(lp.top_logprobs!.every((o) => Object.keys(o).length >= 1)).toBe(true);
    const s = await client.completions.create({
      model: MODEL,
      prompt: [5, 6, 7],
      max_tokens: 4,
      temperature: 0,
      logprobs: 2,
      stream: true,
    });
    const streamed: number[] = [];
    for await (const c of s)
      if (c.choices[0]?.logprobs?.token_logprobs) streamed.push(...c.choices[0].logprobs.token_logprobs);
    expect(streamed).toEqual(lp.token_logprobs);
  });

  it('chat completions accept logprobs and top_logprobs', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
      max_tokens: 3,
      logprobs: true,
      top_logprobs: 2,
    });
    expect(r.choices[0].logprobs === null || Array.isArray(r.choices[0].logprobs.content)).toBe(true);
    await expect(
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
        logprobs: true,
        top_logprobs: 21,
      }),
    ).rejects.toMatchObject({ status: 400 });
  });
});

describe('n > 1', () => {
  it('n answers, answer i the same as a single request with seed + i, sharing the prompt pages', async () => {
    const prompt = Array.from({ length: 40 }, (_, j) => (j * 7919 + 13) % 199000);
    const before = engine.stats().prefixPagesReused;
    const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 5, n: 3, seed: 5 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(r.usage?.completion_tokens).toBe(15);
    expect(engine.stats().prefixPagesReused).toBeGreaterThan(before);
    for (let i = 0; i < 3; i++) {
      const one = await client.completions.create({ model: MODEL, prompt, max_tokens: 5, seed: 5 + i });
      expect(r.choices[i].text).toBe(one.choices[0].text);
    }
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Pick one' }],
      max_tokens: 3,
      n: 2,
      seed: 1,
    });
    expect(chat.choices).toHaveLength(2);
  });

  it('streamed: each choice, put together from its interleaved chunks, equals the same answer unstreamed; usage sums them', async () => {
    const args = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'Stream three answers' }],
      max_tokens: 6,
      n: 3,
      seed: 11,
    };
    const whole = await client.chat.completions.create(args);
    const stream = await client.chat.completions.create({
      ...args,
      stream: true,
      stream_options: { include_usage: true },
    });
    const text = ['', '', ''],
      finish: (string | null)[] = [null, null, null];
    let usage;
    for await (const chunk of stream) {
      for (const ch of chunk.choices) {
        text[ch.index] += ch.delta?.content ?? '';
        if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toEqual(whole.choices.map((c) => c.message.content));
    expect(finish).toEqual(['length', 'length', 'length']);
    expect(usage).toMatchObject({ completion_tokens: 18 });

    const prompt = 'Once upon a time';
    const cw = await client.completions.create({ model: MODEL, prompt, max_tokens: 4, n: 2, seed: 3 });
    const cs = await client.completions.create({
      model: MODEL,
      prompt,
      max_tokens: 4,
      n: 2,
      seed: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    const ct = ['', ''];
    let cu;
    for await (const chunk of cs) {
      for (const ch of chunk.choices) ct[ch.index] += ch.text;
      if (chunk.usage) cu = chunk.usage;
    }
    expect(ct).toEqual(cw.choices.map((c) => c.text));
    expect(cu).toMatchObject({ completion_tokens: 8 });
  });
});

describe('usage details over HTTP', () => {
  it('a repeated chat reports cached prompt tokens; reasoning tokens are counted', async () => {
    const args = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'Tell me about caches, please, at some length.' }],
      max_tokens: 2,
    };
    await client.chat.completions.create(args);
    const r = await client.chat.completions.create(args);
    expect(r.usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThan(0);
    expect(typeof r.usage?.completion_tokens_details?.reasoning_tokens).toBe('number');
  });
});
