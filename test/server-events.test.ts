// How the server spells each kind of model output, on scripted turns (a stand-in engine whose
// chat() replays fixed events), read back through the official openai client.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type ChatEvent, type ChatResult, type Engine, Generation } from '../lib/index.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';

const usage = { promptTokens: 10, completionTokens: 7, totalTokens: 17 };
const timings = { promptMs: 1, generationMs: 1, promptTokensPerSecond: 1, tokensPerSecond: 1 };
let script: ChatEvent[] = [];

function scripted(): Generation<ChatEvent, ChatResult> {
  const events = script;
  return new Generation(async function* () {
    const r = { text: '', reasoning: '', commentary: '', toolCalls: [] as ChatResult['toolCalls'] };
    for (const ev of events) {
      if (ev.type === 'text') r.text += ev.delta;
      if (ev.type === 'reasoning') r.reasoning += ev.delta;
      if (ev.type === 'tool-call')
        r.toolCalls.push({ id: ev.id, name: ev.name, arguments: ev.arguments, rawArguments: ev.rawArguments });
      yield ev;
    }
    const done = events.at(-1) as Extract<ChatEvent, { type: 'done' }>;
    return {
      ...r,
      finishReason: done.finishReason,
      usage,
      timings,
      tokens: [],
      message: { role: 'assistant', content: r.text || null },
    };
  });
}

const fakeEngine = {
  chat: () => scripted(),
  stats: () => ({
    running: 0,
    queued: 0,
    kvPagesUsed: 0,
    kvPagesTotal: 1,
    prefixPagesReused: 0,
    steps: 0,
    promptTokens: 0,
    generatedTokens: 0,
    lastStepMs: 0,
    stepMsTotal: 0,
  }),
} as unknown as Engine;

let server: RunningServer;
let client: OpenAI;
beforeAll(async () => {
  server = await listen(createApp(fakeEngine, { modelId: 'm' }), { port: 0 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0 });
});
afterAll(() => server?.close());

const answer: ChatEvent[] = [
  { type: 'reasoning', delta: 'The user asks ' },
  { type: 'reasoning', delta: 'for the capital.' },
  { type: 'text', delta: 'Oslo' },
  { type: 'text', delta: '.' },
  { type: 'done', finishReason: 'stop', usage, timings },
];
const call: ChatEvent[] = [
  { type: 'reasoning', delta: 'Need the weather.' },
  {
    type: 'tool-call',
    id: 'call_0',
    name: 'get_weather',
    arguments: { city: 'Oslo' },
    rawArguments: '{"city":"Oslo"}',
  },
  { type: 'done', finishReason: 'tool-calls', usage, timings },
];

describe('chat completions', () => {
  it('reasoning goes to reasoning_content and reasoning, the answer to content', async () => {
    script = answer;
    const r = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'q' }] });
    const m = r.choices[0].message as (typeof r.choices)[0]['message'] & {
      reasoning_content?: string;
      reasoning?: string;
    };
    expect(m.content).toBe('Oslo.');
    expect(m.reasoning_content).toBe('The user asks for the capital.');
    expect(m.reasoning).toBe('The user asks for the capital.');
    expect(r.choices[0].finish_reason).toBe('stop');
  });

  it('a tool call streams as a tool_calls delta and finishes with tool_calls', async () => {
    script = call;
    const stream = await client.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'q' }],
      stream: true,
    });
    const calls: unknown[] = [];
    let finish;
    for await (const c of stream) {
      if (c.choices[0]?.delta?.tool_calls) calls.push(...c.choices[0].delta.tool_calls);
      if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
    }
    expect(calls).toEqual([
      { index: 0, id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
    ]);
    expect(finish).toBe('tool_calls');
    const whole = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'q' }] });
    expect(whole.choices[0].message.tool_calls?.[0]).toMatchObject({
      id: 'call_0',
      function: { name: 'get_weather', arguments: '{"city":"Oslo"}' },
    });
  });
});

describe('responses', () => {
  it('streaming builds reasoning, message and function_call items the SDK accepts', async () => {
    script = answer;
    const s = client.responses.stream({ model: 'm', input: 'q' });
    const types: string[] = [];
    for await (const ev of s) types.push(ev.type);
    const r = await s.finalResponse();
    expect(r.output.map((o) => o.type)).toEqual(['reasoning', 'message']);
    expect(r.output_text).toBe('Oslo.');
    expect((r.output[0] as { content?: { text: string }[] }).content?.[0].text).toBe('The user asks for the capital.');
    expect(types).toContain('response.reasoning_text.delta');
    expect(types).toContain('response.output_text.delta');
    expect(types.at(-1)).toBe('response.completed');

    script = call;
    const s2 = client.responses.stream({ model: 'm', input: 'q' });
    for await (const _ of s2);
    const r2 = await s2.finalResponse();
    expect(r2.output.map((o) => o.type)).toEqual(['reasoning', 'function_call']);
    expect(r2.output[1]).toMatchObject({
      type: 'function_call',
      call_id: 'call_0',
      name: 'get_weather',
      arguments: '{"city":"Oslo"}',
    });
  });

  it('without streaming, the same items', async () => {
    script = call;
    const r = await client.responses.create({ model: 'm', input: 'q' });
    expect(r.status).toBe('completed');
    expect(r.output[1]).toMatchObject({ type: 'function_call', call_id: 'call_0', name: 'get_weather' });
  });
});

describe('logprobs in chat completions', () => {
  it('answer tokens stream as logprobs.content entries with top_logprobs', async () => {
    const lp = {
      token: 5,
      text: 'Oslo',
      bytes: [79, 115, 108, 111],
      logprob: -0.1,
      top: [{ token: 5, text: 'Oslo', bytes: [79, 115, 108, 111], logprob: -0.1 }],
    };
    script = [
      { type: 'text', delta: 'Oslo' },
      { type: 'logprob', logprob: lp },
      { type: 'done', finishReason: 'stop', usage, timings },
    ];
    const stream = await client.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'q' }],
      stream: true,
      logprobs: true,
      top_logprobs: 1,
    });
    const entries: unknown[] = [];
    for await (const c of stream) if (c.choices[0]?.logprobs?.content) entries.push(...c.choices[0].logprobs.content);
    expect(entries).toEqual([
      {
        token: 'Oslo',
        logprob: -0.1,
        bytes: [79, 115, 108, 111],
        top_logprobs: [{ token: 'Oslo', logprob: -0.1, bytes: [79, 115, 108, 111] }],
      },
    ]);
  });
});

describe('logprobs in responses', () => {
  it('include message.output_text.logprobs fills the output text logprobs, streamed or not', async () => {
    const lp = { token: 5, text: 'Oslo', bytes: [79, 115, 108, 111], logprob: -0.25, top: [] };
    script = [
      { type: 'text', delta: 'Oslo' },
      { type: 'logprob', logprob: lp },
      { type: 'done', finishReason: 'stop', usage, timings },
    ];
    const s = client.responses.stream({ model: 'm', input: 'q', include: ['message.output_text.logprobs'] });
    for await (const _ of s);
    const r = await s.finalResponse();
    const part = (r.output[0] as { content: { logprobs?: unknown[] }[] }).content[0];
    expect(part.logprobs).toEqual([{ token: 'Oslo', logprob: -0.25, bytes: [79, 115, 108, 111], top_logprobs: [] }]);
  });
});
