// The server against browsers and other users: a web page cannot make it run (Host, Origin and
// content-type checks), one user cannot read another's prompts from the prefix cache, and a
// client cannot hold its output in memory, a connection or a request slot without bound.
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { createEngine, type Engine, type EngineOptions, loadModel, type Model } from '../lib/index.js';
import { createApp, listen, type RunningServer, type ServerOptions } from '../lib/server/server.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

// The API key check must go through timingSafeEqual: spied on, otherwise the real one.
vi.mock('node:crypto', async (importOriginal) => {
  const m = await importOriginal<typeof import('node:crypto')>();
  return { ...m, timingSafeEqual: vi.fn(m.timingSafeEqual) };
});
const { timingSafeEqual } = await import('node:crypto');

const MODEL = 'tiny-gpt-oss';
let model: Model;

beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(21));
});
afterAll(() => model?.dispose());

interface Served {
  engine: Engine;
  server: RunningServer;
  port: number;
  [Symbol.asyncDispose](): Promise<void>;
}

async function serve(
  app: Partial<ServerOptions> & Record<string, unknown> = {},
  engineOpts: Omit<EngineOptions, 'model'> = {},
  listenOpts: Record<string, unknown> = {},
): Promise<Served> {
  const engine = await createEngine({
    model,
    maxSequences: 8,
    maxContext: 4096,
    maxBatchTokens: 256,
    pageSize: 16,
    ...engineOpts,
  });
  const server = await listen(createApp(engine, { modelId: MODEL, ...app } as ServerOptions), {
    port: 0,
    ...listenOpts,
  });
  return {
    engine,
    server,
    port: Number(new URL(server.url).port),
    async [Symbol.asyncDispose]() {
      await server.close();
      await engine.close({ abort: true });
    },
  };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request over node:http, so that Host and Origin can be anything a browser might send;
 * `chunked` sends the body without a Content-Length. */
function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
  chunked = false,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (chunked && body) req.write(body);
    req.end(chunked ? undefined : body);
  });
}

const JSON_TYPE = { 'content-type': 'application/json' };
const completion = JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 2 });
const errorOf = (r: Reply) =>
  (JSON.parse(r.body) as { error: { message: string; type: string; code: string | null } }).error;
const waitFor = async (cond: () => boolean, ms: number) => {
  const until = Date.now() + ms;
  while (!cond() && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return cond();
};

describe('a web page cannot drive the server', () => {
  it("a Host that is not one of the server's names is refused with 403, before anything runs", async () => {
    await using s = await serve();
    const before = s.engine.stats().promptTokens;
    for (const host of ['attacker.example', `attacker.example:${s.port}`, `127.0.0.1.attacker.example:${s.port}`]) {
      const r = await request(s.port, 'POST', '/v1/completions', { ...JSON_TYPE, host }, completion);
      expect(r.status, host).toBe(403);
      expect(errorOf(r).message).toContain(host.split(':')[0]);
      expect(errorOf(r).type).toBe('permission_error');
      expect((await request(s.port, 'GET', '/v1/models', { host })).status).toBe(403);
    }
    expect(s.engine.stats().promptTokens).toBe(before);
    for (const host of [
      `127.0.0.1:${s.port}`,
      `localhost:${s.port}`,
      `LocalHost:${s.port}`,
      `[::1]:${s.port}`,
      'localhost',
    ])
      expect((await request(s.port, 'POST', '/v1/completions', { ...JSON_TYPE, host }, completion)).status, host).toBe(
        200,
      );
  });

  it('allowedHosts adds names; "*" allows any', async () => {
    {
      await using s = await serve({ allowedHosts: ['gpu-box.lan'] });
      expect((await request(s.port, 'GET', '/v1/models', { host: `gpu-box.lan:${s.port}` })).status).toBe(200);
      expect((await request(s.port, 'GET', '/v1/models', { host: `other.lan:${s.port}` })).status).toBe(403);
    }
    await using s = await serve({ allowedHosts: ['*'] });
    expect((await request(s.port, 'GET', '/v1/models', { host: 'anything.example' })).status).toBe(200);
  });

  it("an Origin other than the server's own is refused with 403", async () => {
    await using s = await serve();
    for (const origin of [
      'http://attacker.example',
      `http://attacker.example:${s.port}`,
      'http://localhost:3000',
      'null',
    ]) {
      const r = await request(s.port, 'POST', '/v1/completions', { ...JSON_TYPE, origin }, completion);
      expect(r.status, origin).toBe(403);
      expect(errorOf(r).message).toContain(origin);
    }
    // The server's own pages (same host and port) may call it.
    for (const [host, origin] of [
      [`127.0.0.1:${s.port}`, `http://127.0.0.1:${s.port}`],
      [`localhost:${s.port}`, `http://localhost:${s.port}`],
    ])
      expect(
        (await request(s.port, 'POST', '/v1/completions', { ...JSON_TYPE, host, origin }, completion)).status,
        origin,
      ).toBe(200);
  });

  it('allowedOrigins lets a listed page in, with CORS headers and a preflight answer', async () => {
    await using s = await serve({ allowedOrigins: ['https://app.example'], apiKey: 'sk-1' });
    const origin = 'https://app.example';
    const pre = await request(s.port, 'OPTIONS', '/v1/completions', {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type, authorization',
    });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe(origin);
    expect(String(pre.headers['access-control-allow-headers']).toLowerCase()).toContain('authorization');
    const r = await request(
      s.port,
      'POST',
      '/v1/completions',
      { ...JSON_TYPE, origin, authorization: 'Bearer sk-1' },
      completion,
    );
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBe(origin);
    expect(
      (
        await request(s.port, 'OPTIONS', '/v1/completions', {
          origin: 'https://other.example',
          'access-control-request-method': 'POST',
        })
      ).status,
    ).toBe(403);
  });

  it("a body that is not declared JSON (a browser's simple request) is refused with 415", async () => {
    await using s = await serve();
    const before = s.engine.stats().promptTokens;
    for (const type of [
      'text/plain',
      'text/plain;charset=UTF-8',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      undefined,
    ]) {
      const r = await request(s.port, 'POST', '/v1/completions', type ? { 'content-type': type } : {}, completion);
      expect(r.status, String(type)).toBe(415);
      expect(errorOf(r).message).toContain('application/json');
    }
    expect(s.engine.stats().promptTokens).toBe(before);
    expect(
      (
        await request(
          s.port,
          'POST',
          '/v1/completions',
          { 'content-type': 'application/json; charset=utf-8' },
          completion,
        )
      ).status,
    ).toBe(200);
  });
});

describe('the prefix cache is not shared across salts or keys', () => {
  // 200 words: many whole 16-token pages, so a shared prefix shows as cached tokens.
  const secret = `The launch code is ${Array.from({ length: 200 }, (_, i) => `w${i}`).join(' ')}`;
  const chat = async (port: number, extra: object, key?: string, chunked = false) => {
    const r = await request(
      port,
      'POST',
      '/v1/chat/completions',
      { ...JSON_TYPE, ...(key && { authorization: `Bearer ${key}` }) },
      JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: secret }], max_tokens: 1, ...extra }),
      chunked,
    );
    expect(r.status, r.body).toBe(200);
    return (JSON.parse(r.body) as { usage: { prompt_tokens_details: { cached_tokens: number } } }).usage
      .prompt_tokens_details.cached_tokens;
  };

  it('cache_salt: only requests with the same salt share cached pages', async () => {
    await using s = await serve();
    expect(await chat(s.port, { cache_salt: 'alice' })).toBe(0);
    expect(await chat(s.port, { cache_salt: 'bob' }), 'another salt sees nothing cached').toBe(0);
    expect(await chat(s.port, {}), 'no salt sees nothing cached').toBe(0);
    expect(await chat(s.port, { cache_salt: 'alice' }), 'the same salt reuses its pages').toBeGreaterThan(0);
    expect(await chat(s.port, {}), 'unsalted requests still share with each other').toBeGreaterThan(0);
    // /v1/responses takes it too.
    const r = await request(
      s.port,
      'POST',
      '/v1/responses',
      JSON_TYPE,
      JSON.stringify({ model: MODEL, input: secret, max_output_tokens: 1, cache_salt: 'carol' }),
    );
    expect(r.status, r.body).toBe(200);
    expect(
      (JSON.parse(r.body) as { usage: { input_tokens_details: { cached_tokens: number } } }).usage.input_tokens_details
        .cached_tokens,
    ).toBe(0);
  });

  it("several API keys: each key's prompts are cached apart", async () => {
    await using s = await serve({ apiKey: ['sk-alice', 'sk-bob'] });
    expect(await chat(s.port, {}, 'sk-alice')).toBe(0);
    expect(await chat(s.port, {}, 'sk-bob'), 'another key sees nothing cached').toBe(0);
    expect(await chat(s.port, { cache_salt: 'x' }, 'sk-alice')).toBe(0);
    expect(
      await chat(s.port, {}, 'sk-alice', true),
      'the same key reuses its pages (a chunked body too)',
    ).toBeGreaterThan(0);
    expect((await request(s.port, 'GET', '/v1/models', { authorization: 'Bearer sk-carol' })).status).toBe(401);
  });

  it('cacheIsolation "none" shares across keys, as one key does', async () => {
    await using s = await serve({ apiKey: ['sk-alice', 'sk-bob'], cacheIsolation: 'none' });
    expect(await chat(s.port, {}, 'sk-alice')).toBe(0);
    expect(await chat(s.port, {}, 'sk-bob')).toBeGreaterThan(0);
  });
});

describe('no client holds memory, a connection or a slot without bound', () => {
  it('a client that stops reading a stream has its request aborted within the write timeout', async () => {
    // A long model id makes every chunk about 64 KB, so the kernel's socket buffers (a few MB on
    // loopback) fill within a few dozen tokens; left alone the answer would run for 3000.
    const modelId = 'm'.repeat(64 * 1024);
    await using s = await serve({ modelId, writeTimeoutMs: 300 });
    const body = JSON.stringify({
      model: modelId,
      prompt: 'Once upon a time',
      max_tokens: 3000,
      stream: true,
      temperature: 1,
      seed: 1,
    });
    const socket = net.connect(s.port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write(
      `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    socket.pause(); // never reads a byte of the answer
    try {
      expect(await waitFor(() => s.engine.stats().running === 1, 10_000), 'the answer started').toBe(true);
      const before = s.engine.stats().generatedTokens;
      expect(await waitFor(() => s.engine.stats().running === 0, 15_000), 'the sequence was aborted').toBe(true);
      expect(s.engine.stats().generatedTokens - before, 'it was cut short').toBeLessThan(2500);
    } finally {
      socket.destroy();
    }
  }, 40_000);

  it('a request past the deadline is aborted with 504', async () => {
    await using s = await serve({ requestTimeoutMs: 1000 });
    const t0 = Date.now();
    const r = await request(
      s.port,
      'POST',
      '/v1/completions',
      JSON_TYPE,
      JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 3000 }),
    );
    expect(r.status, r.body.slice(0, 300)).toBe(504);
    expect(errorOf(r).message).toContain('1000 ms');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(await waitFor(() => s.engine.stats().running === 0, 2000)).toBe(true);
    // Streamed, the deadline is the stream's last event (not an end that looks like a hang-up).
    const streamed = await request(
      s.port,
      'POST',
      '/v1/completions',
      JSON_TYPE,
      JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 3000, stream: true }),
    );
    expect(streamed.status).toBe(200);
    const last = streamed.body.trim().split('\n\n').at(-1)!;
    expect(JSON.parse(last.replace(/^data: /, '')).error).toMatchObject({
      code: 'request_timeout',
      message: expect.stringContaining('1000 ms'),
    });
    // A quick request is untouched.
    expect((await request(s.port, 'POST', '/v1/completions', JSON_TYPE, completion)).status).toBe(200);
  }, 30_000);

  it('maxConnections: connections past the cap are closed unanswered', async () => {
    await using s = await serve({}, {}, { maxConnections: 2 });
    const open = await Promise.all(
      [0, 1].map(async () => {
        const c = net.connect(s.port, '127.0.0.1');
        c.on('error', () => {});
        await new Promise((r) => c.once('connect', r));
        return c;
      }),
    );
    await new Promise((r) => setTimeout(r, 50));
    const third = await request(s.port, 'GET', '/health').then(
      (r) => r.status,
      (e: Error) => e.message,
    );
    expect(third).not.toBe(200);
    for (const c of open) c.destroy();
    await new Promise((r) => setTimeout(r, 50));
    expect((await request(s.port, 'GET', '/health')).status).toBe(200);
  });

  it('a 429 says when to retry', async () => {
    await using s = await serve({}, { maxSequences: 1, maxQueue: 0 });
    const ac = new AbortController();
    // The stream's body is left unread (not cancelled) until the 429 is seen: cancelling it is a
    // hang-up, which frees the only slot and lets the second request in.
    const long = fetch(`${s.server.url}/v1/completions`, {
      method: 'POST',
      headers: JSON_TYPE,
      body: JSON.stringify({ model: MODEL, prompt: 'Hi', max_tokens: 3000, stream: true }),
      signal: ac.signal,
    });
    long.catch(() => {});
    expect(await waitFor(() => s.engine.stats().running === 1, 10_000)).toBe(true);
    const r = await request(s.port, 'POST', '/v1/completions', JSON_TYPE, completion);
    ac.abort();
    await long.then(
      (res) => res.body?.cancel().catch(() => {}),
      () => {},
    );
    expect(r.status).toBe(429);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
  });

  it('the API key is compared in constant time, and a near miss is refused', async () => {
    await using s = await serve({ apiKey: 'sk-secret' });
    vi.mocked(timingSafeEqual).mockClear();
    expect((await request(s.port, 'GET', '/v1/models', { authorization: 'Bearer sk-secret' })).status).toBe(200);
    expect(vi.mocked(timingSafeEqual)).toHaveBeenCalled();
    for (const a of [
      'Bearer sk-secreT',
      'Bearer  sk-secret',
      'Bearer sk-secre',
      'bearer sk-secret',
      'sk-secret',
      `Bearer ${createHash('sha256').update('sk-secret').digest('hex')}`,
    ])
      expect((await request(s.port, 'GET', '/v1/models', { authorization: a })).status, a).toBe(401);
  });

  it('/metrics needs the key when one is set; /health does not', async () => {
    await using s = await serve({ apiKey: 'sk-secret' });
    const m = await request(s.port, 'GET', '/metrics');
    expect(m.status).toBe(401);
    expect(errorOf(m).type).toBe('authentication_error');
    expect((await request(s.port, 'GET', '/metrics', { authorization: 'Bearer sk-secret' })).status).toBe(200);
    expect((await request(s.port, 'GET', '/health')).status).toBe(200);
  });
});
