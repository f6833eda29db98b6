// The server as an operator runs it: a drain that lets requests in flight finish and ends the
// streams left at its deadline properly, a log line per request, 405 for a wrong method, the
// default model id, a max_tokens the context cannot hold refused, and vLLM's latency metrics.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { SampledToken } from '../lib/backend/native.js';
import { chat, type ChatMessage, type ChatOptions } from '../lib/chat/generate.js';
import { getTokenizer } from '../lib/chat/tokenizer.js';
import { AbortedError } from '../lib/errors.js';
import { createEngine, type Engine, type EngineOptions, loadModel, type Model } from '../lib/index.js';
import { formatRequest, type RequestLog, requestLogger } from '../lib/server/log.js';
import { servedModelId } from '../lib/server/model-id.js';
import { createApp, listen, type ServerOptions } from '../lib/server/server.js';
import { tinyRealVocabCheckpoint, tmpDir } from './helpers/checkpoint.js';

const MODEL = 'tiny-gpt-oss';
let model: Model;

beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(21));
});
afterAll(() => model?.dispose());

async function serve(app: Partial<ServerOptions> = {}, engineOpts: Omit<EngineOptions, 'model'> = {}) {
  const engine = await createEngine({
    model,
    maxSequences: 8,
    maxContext: 4096,
    maxBatchTokens: 256,
    pageSize: 16,
    ...engineOpts,
  });
  const logs: RequestLog[] = [];
  const server = await listen(createApp(engine, { modelId: MODEL, log: (r) => logs.push(r), ...app }), { port: 0 });
  return {
    engine,
    server,
    logs,
    post: (path: string, body: object) =>
      fetch(`${server.url}${path}`, {
        method: 'POST',
        body: JSON.stringify({ model: MODEL, ...body }),
        headers: { 'content-type': 'application/json' },
      }),
    async [Symbol.asyncDispose]() {
      await server.close();
      await engine.close({ abort: true });
    },
  };
}

type SSE = { event?: string; data: string };
const parseSSE = (text: string): SSE[] =>
  text
    .split('\n\n')
    .filter((b) => b.trim())
    .map((b) => {
      const e: SSE = { data: '' };
      for (const line of b.split('\n')) {
        if (line.startsWith('event: ')) e.event = line.slice(7);
        if (line.startsWith('data: ')) e.data += line.slice(6);
      }
      return e;
    });

/** A stream whose first event has come; `rest` resolves with all its events once it ends. */
async function opened(res: Response) {
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  while (!text.includes('\n\n')) {
    const r = await reader.read();
    if (r.done) break;
    text += dec.decode(r.value, { stream: true });
  }
  const rest = (async () => {
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += dec.decode(r.value, { stream: true });
    return parseSSE(text);
  })();
  return { rest };
}

const json = (e: SSE) => JSON.parse(e.data) as Record<string, any>;

/** An engine double whose every sequence says `<|channel|>final<|message|>` then ` word` until
 * stopped, one token every `ms`. */
function scriptedEngine(ms = 5) {
  const tok = getTokenizer();
  const script = [...tok.encode('<|channel|>final<|message|>', { allowedSpecial: 'all' })];
  const word = tok.encode(' word');
  const engine = {
    live: 0,
    config: model.config,
    defaultContext: 4096,
    stats: () => ({ running: engine.live, queued: 0 }),
    chat(messages: ChatMessage[], options: ChatOptions) {
      return chat(this, messages, options);
    },
    start(_prompt: number[], _sampler: unknown, limits: { signal?: AbortSignal }) {
      engine.live++;
      let i = 0;
      let closed = false;
      return {
        next: async (): Promise<SampledToken> => {
          await new Promise((r) => setTimeout(r, ms));
          if (limits.signal?.aborted) throw new AbortedError('generation was aborted', { cause: limits.signal.reason });
          const token = i < script.length ? script[i] : word[(i - script.length) % word.length];
          i++;
          return { token, logprob: 0 };
        },
        close: () => {
          if (!closed) engine.live--;
          closed = true;
        },
        cachedTokens: 0,
      };
    },
  };
  return engine;
}

/** Waits until the engine runs `n` sequences. */
async function running(engine: { stats(): { running: number } }, n: number) {
  for (let i = 0; i < 1000 && engine.stats().running !== n; i++) await new Promise((r) => setTimeout(r, 10));
  expect(engine.stats().running).toBe(n);
}

describe('drain: Ctrl-C on gptoss serve', () => {
  it('requests in flight finish, streams included, while new ones get 503; then the server closes', async () => {
    await using s = await serve();
    const stream = await opened(await s.post('/v1/completions', { prompt: [1, 2, 3], max_tokens: 400, stream: true }));
    const plain = s.post('/v1/completions', { prompt: [4, 5, 6], max_tokens: 300 });
    await running(s.engine, 2); // the plain request is in flight
    const drained = s.server.drain({ deadlineMs: 120_000 });
    const late = await s.post('/v1/completions', { prompt: [7], max_tokens: 2 });
    expect(late.status).toBe(503);
    expect(late.headers.get('connection')).toBe('close');
    expect(await late.json()).toEqual({
      error: {
        message: 'the server is shutting down and takes no new requests',
        type: 'server_error',
        param: null,
        code: 'shutting_down',
      },
    });
    const events = await stream.rest;
    expect(events.at(-1)!.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map(json);
    expect(chunks.filter((c) => c.choices[0].text !== '').length).toBeGreaterThan(0);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe('length');
    expect(chunks.filter((c) => c.choices[0].finish_reason === null).length).toBe(400); // all of it
    const p = await plain;
    expect(p.status).toBe(200);
    expect(((await p.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(300);
    expect(await drained).toEqual({ inFlight: 2, cut: 0 });
    await expect(fetch(`${s.server.url}/health`)).rejects.toThrow(); // closed
    await running(s.engine, 0); // its pages go back at the step's end
  });

  it('past the deadline what is left is aborted: a stream ends with its finish_reason, usage and [DONE], an unstreamed request gets 503', async () => {
    await using s = await serve();
    const long = 2000;
    const completions = await opened(
      await s.post('/v1/completions', {
        prompt: [1, 2, 3],
        max_tokens: long,
        n: 2,
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    const plain = s.post('/v1/completions', { prompt: [4, 5, 6], max_tokens: long });
    await running(s.engine, 3); // n = 2, and the plain one
    expect(await s.server.drain({ deadlineMs: 300 })).toEqual({ inFlight: 2, cut: 2 });

    const c = await completions.rest;
    expect(c.at(-1)!.data).toBe('[DONE]');
    const chunks = c.slice(0, -1).map(json);
    expect(chunks.some((x) => 'error' in x)).toBe(false);
    for (const index of [0, 1]) {
      const mine = chunks.filter((x) => x.choices[0]?.index === index);
      expect(mine.at(-1)!.choices[0].finish_reason).toBe('length');
      expect(mine.length - 1).toBeLessThan(long); // cut, not run to max_tokens
    }
    const usage = chunks.at(-1)!.usage as { prompt_tokens: number; completion_tokens: number };
    expect(usage.prompt_tokens).toBe(3);
    const sent = chunks.filter((x) => x.choices[0]?.finish_reason === null).length;
    expect(usage.completion_tokens).toBeGreaterThanOrEqual(sent); // a token drawn as the cut came may be unsent
    expect(usage.completion_tokens).toBeLessThanOrEqual(sent + 2);

    const p = await plain;
    expect(p.status).toBe(503);
    expect(((await p.json()) as { error: { code: string } }).error).toEqual({
      message: 'the server shut down before the request finished',
      type: 'server_error',
      param: null,
      code: 'shutting_down',
    });
    await running(s.engine, 0); // its pages go back at the step's end
  });

  it('chat completions and responses streams cut at the deadline end as by length: finish_reason and [DONE], response.incomplete', async () => {
    // The random tiny model's chat events may all come at its end: a scripted engine answers at once.
    const engine = scriptedEngine();
    const server = await listen(createApp(engine as unknown as Engine, { modelId: MODEL }), { port: 0 });
    const post = (path: string, body: object) =>
      fetch(`${server.url}${path}`, {
        method: 'POST',
        body: JSON.stringify({ model: MODEL, stream: true, ...body }),
        headers: { 'content-type': 'application/json' },
      });
    const chat = await opened(
      await post('/v1/chat/completions', {
        messages: [{ role: 'user', content: 'Hi' }],
        n: 2,
        stream_options: { include_usage: true },
      }),
    );
    const responses = await opened(await post('/v1/responses', { input: 'Hi' }));
    await new Promise((r) => setTimeout(r, 100));
    expect(await server.drain({ deadlineMs: 100 })).toEqual({ inFlight: 2, cut: 2 });
    for (let i = 0; i < 100 && engine.live; i++) await new Promise((r) => setTimeout(r, 10));
    expect(engine.live).toBe(0); // every sequence closed

    const h = await chat.rest;
    expect(h.at(-1)!.data).toBe('[DONE]');
    const hc = h.slice(0, -1).map(json);
    expect(hc.some((x) => 'error' in x)).toBe(false);
    for (const index of [0, 1]) {
      const mine = hc.filter((x) => x.choices[0]?.index === index);
      expect(mine.map((x) => x.choices[0].delta.content).join('')).toMatch(/^( word)+$/);
      expect(mine.at(-1)!.choices[0]).toEqual({ index, delta: {}, finish_reason: 'length', logprobs: null });
    }
    expect(hc.at(-1)!.usage.completion_tokens).toBeGreaterThan(0);

    const r = await responses.rest;
    expect(r.some((e) => e.event === 'error')).toBe(false);
    const last = r.at(-1)!;
    expect(last.event).toBe('response.incomplete');
    const resp = json(last).response;
    expect(resp.status).toBe('incomplete');
    expect(resp.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(resp.output[0].content[0].text).toMatch(/^( word)+$/);
    expect(r.map((e) => e.event)).toContain('response.output_item.done');
  });

  it('a server with nothing in flight drains at once', async () => {
    await using s = await serve();
    const t0 = Date.now();
    expect(await s.server.drain({ deadlineMs: 60_000 })).toEqual({ inFlight: 0, cut: 0 });
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe('a log line per request', () => {
  it('method, route, status, tokens in and out, latency; for streams once the stream has ended', async () => {
    await using s = await serve();
    const r = await s.post('/v1/completions', { prompt: [1, 2, 3, 4], max_tokens: 5 });
    expect(r.status).toBe(200);
    const st = await opened(
      await s.post('/v1/chat/completions', {
        messages: [{ role: 'user', content: 'Hi' }],
        max_tokens: 4,
        stream: true,
      }),
    );
    await st.rest;
    await fetch(`${s.server.url}/v1/models/nope`);
    await fetch(`${s.server.url}/no/such/route`);
    for (let i = 0; i < 50 && s.logs.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    expect(s.logs.map(({ ms, ...l }) => l)).toEqual([
      { method: 'POST', route: '/v1/completions', status: 200, tokensIn: 4, tokensOut: 5 },
      { method: 'POST', route: '/v1/chat/completions', status: 200, tokensIn: expect.any(Number), tokensOut: 4 },
      { method: 'GET', route: '/v1/models/:id', status: 404, tokensIn: 0, tokensOut: 0 },
      { method: 'GET', route: '/no/such/route', status: 404, tokensIn: 0, tokensOut: 0 },
    ]);
    expect(s.logs[1].tokensIn).toBeGreaterThan(4);
    for (const l of s.logs) expect(l.ms).toBeGreaterThan(0);
  });

  it('pino JSON lines when not on a terminal, a short line of ours on one, nothing when silenced', () => {
    const entry: RequestLog = {
      method: 'POST',
      route: '/v1/chat/completions',
      status: 200,
      tokensIn: 31,
      tokensOut: 120,
      ms: 2345.67,
    };
    const lines: string[] = [];
    requestLogger({ human: false, write: (l) => lines.push(l) })(entry);
    requestLogger({ human: false, write: (l) => lines.push(l) })({ ...entry, status: 500 });
    const [a, b] = lines.map((l) => JSON.parse(l));
    expect(a).toMatchObject({
      level: 30,
      msg: 'request',
      method: 'POST',
      route: '/v1/chat/completions',
      status: 200,
      tokensIn: 31,
      tokensOut: 120,
      ms: 2345.7,
    });
    expect(typeof a.time).toBe('number');
    expect(b.level).toBe(50); // 5xx at error
    const human: string[] = [];
    requestLogger({ human: true, write: (l) => human.push(l) })(entry);
    expect(human).toHaveLength(1);
    expect(human[0]).toMatch(/^\d\d:\d\d:\d\d POST \/v1\/chat\/completions 200 31 -> 120 tokens 2346 ms\n$/);
    expect(formatRequest({ ...entry, route: '/x\x1b[2J', tokensIn: 0, tokensOut: 0 }, new Date(0))).toMatch(
      /^\d\d:\d\d:\d\d POST \/x\\x1b\[2J 200 2346 ms$/,
    );
    const quiet: string[] = [];
    requestLogger({ level: 'silent', write: (l) => quiet.push(l) })(entry);
    requestLogger({ level: 'warn', write: (l) => quiet.push(l) })(entry);
    expect(quiet).toEqual([]);
  });
});

describe('a wrong method on a known route', () => {
  it('is a 405 naming the methods the route takes (Allow), with an OpenAI error; an unknown route stays 404', async () => {
    await using s = await serve();
    const cases: [string, string, string][] = [
      ['GET', '/v1/chat/completions', 'POST'],
      ['DELETE', '/v1/completions', 'POST'],
      ['PUT', '/v1/responses', 'POST'],
      ['POST', '/health', 'GET, HEAD'],
      ['POST', '/v1/models', 'GET, HEAD'],
      ['DELETE', '/v1/models/tiny-gpt-oss', 'GET, HEAD'],
      ['POST', '/metrics', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      // A body that is not JSON: the method is refused before the body is looked at.
      const r = await fetch(`${s.server.url}${path}`, { method, body: method === 'GET' ? undefined : 'x=1' });
      expect(r.status, `${method} ${path}`).toBe(405);
      expect(r.headers.get('allow')).toBe(allow);
      expect(await r.json()).toEqual({
        error: {
          message: `${method} is not allowed on ${path}; it takes ${allow}`,
          type: 'invalid_request_error',
          param: null,
          code: 'method_not_allowed',
        },
      });
    }
    expect((await fetch(`${s.server.url}/health`, { method: 'HEAD' })).status).toBe(200);
    const unknown = await fetch(`${s.server.url}/v1/nothing`, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    expect(unknown.status).toBe(404);
  });
});

describe('the default model id', () => {
  it('is the Hub id for a Hub id or a snapshot in a Hugging Face cache, else the directory name, never a path', () => {
    expect(servedModelId('openai/gpt-oss-20b')).toBe('openai/gpt-oss-20b');
    expect(servedModelId('openai/gpt-oss-120b@main')).toBe('openai/gpt-oss-120b');
    const snap = join(tmpDir(), 'hub', 'models--openai--gpt-oss-20b', 'snapshots', 'a'.repeat(40));
    mkdirSync(join(snap, 'original'), { recursive: true });
    expect(servedModelId(snap)).toBe('openai/gpt-oss-20b');
    expect(servedModelId(join(snap, 'original'))).toBe('openai/gpt-oss-20b');
    const dir = join(tmpDir(), 'my-model');
    mkdirSync(dir);
    expect(servedModelId(dir)).toBe('my-model');
    expect(servedModelId(`${dir}/`)).toBe('my-model');
    expect(servedModelId('test/fixtures/tiny-b')).toBe('tiny-b');
  });
});

describe('max_tokens beyond what the context leaves', () => {
  it('is refused with a 400 naming the numbers, on all three routes, before anything is generated', async () => {
    await using s = await serve({}, { maxContext: 256, maxSequences: 2, pageSize: 8 });
    const prompt = Array.from({ length: 250 }, (_, i) => i + 1);
    const cases: [string, object, string][] = [
      ['/v1/completions', { prompt, max_tokens: 7 }, 'max_tokens'],
      ['/v1/completions', { prompt: [1, 2, 3], max_tokens: 254, stream: true }, 'max_tokens'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 250 }, 'max_tokens'],
      [
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 250, stream: true },
        'max_completion_tokens',
      ],
      ['/v1/responses', { input: 'Hi', max_output_tokens: 250 }, 'max_output_tokens'],
      ['/v1/responses', { input: 'Hi', max_output_tokens: 250, stream: true }, 'max_output_tokens'],
    ];
    for (const [path, body, field] of cases) {
      const r = await s.post(path, body);
      expect(r.status, `${path} ${JSON.stringify(body)}`).toBe(400);
      const e = ((await r.json()) as { error: { message: string; param: string; code: string; type: string } }).error;
      expect(e).toMatchObject({ type: 'invalid_request_error', param: field, code: 'context_length_exceeded' });
      const m = new RegExp(
        `^${field} is too large: prompt (\\d+) \\+ ${field} (\\d+) > context 256 \\(at most (\\d+) tokens can follow this prompt\\)$`,
      ).exec(e.message);
      expect(m, e.message).not.toBeNull();
      expect(Number(m![1]) + Number(m![3])).toBe(256);
      expect(Number(m![1]) + Number(m![2])).toBeGreaterThan(256);
    }
    expect(s.engine.stats().generatedTokens).toBe(0);
    // Exactly what is left is accepted.
    const ok = await s.post('/v1/completions', { prompt, max_tokens: 6 });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(6);
  });
});

describe('/metrics', () => {
  it("has vLLM's latency histograms and request gauges", async () => {
    await using s = await serve();
    expect((await s.post('/v1/completions', { prompt: [1, 2, 3], max_tokens: 6 })).status).toBe(200);
    const st = await opened(await s.post('/v1/completions', { prompt: [1, 2], max_tokens: 4, stream: true }));
    await st.rest;
    await new Promise((r) => setTimeout(r, 50));
    const t = await (await fetch(`${s.server.url}/metrics`)).text();
    const value = (line: string) => Number(new RegExp(`^${line.replace(/[{}+.]/g, '\\$&')} (\\S+)$`, 'm').exec(t)?.[1]);
    const label = `model_name="${MODEL}"`;
    expect(t).toContain('# TYPE vllm:time_to_first_token_seconds histogram');
    expect(t).toContain('# TYPE vllm:time_per_output_token_seconds histogram');
    expect(t).toContain('# TYPE vllm:e2e_request_latency_seconds histogram');
    expect(t).toContain('# TYPE vllm:num_requests_running gauge');
    expect(t).toContain('# TYPE vllm:num_requests_waiting gauge');
    expect(value(`vllm:time_to_first_token_seconds_count{${label}}`)).toBe(2);
    expect(value(`vllm:time_per_output_token_seconds_count{${label}}`)).toBe(5 + 3);
    expect(value(`vllm:e2e_request_latency_seconds_count{${label}}`)).toBe(2);
    expect(value(`vllm:time_to_first_token_seconds_bucket{${label},le="+Inf"}`)).toBe(2);
    expect(value(`vllm:e2e_request_latency_seconds_sum{${label}}`)).toBeGreaterThan(0);
    expect(value(`vllm:num_requests_running{${label}}`)).toBe(0);
    expect(value(`vllm:num_requests_waiting{${label}}`)).toBe(0);
    // Buckets are cumulative.
    const buckets = [...t.matchAll(/^vllm:e2e_request_latency_seconds_bucket\{[^}]*\} (\d+)$/gm)].map((m) =>
      Number(m[1]),
    );
    expect(buckets.length).toBeGreaterThan(10);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]).toBeGreaterThanOrEqual(buckets[i - 1]);
  });
});
