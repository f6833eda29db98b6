// The OpenAI-compatible HTTP server over an engine: /v1/chat/completions, /v1/completions,
// /v1/models, /health, /metrics. Requests are validated (zod) into the engine's options; every
// failure is an OpenAI-shaped error with a 4xx status (5xx only for a fault of ours); a client
// that disconnects mid-stream aborts its sequence. Before any route: the Host and Origin checks
// (a web page must not drive a local server), the API key, JSON-only bodies and the size limit;
// around each response, a watch on its connection (a client that stops reading is cut off) and an
// optional deadline.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Server } from 'node:net';

import { serve, type ServerType } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { matchedRoutes } from 'hono/route';
import { streamSSE } from 'hono/streaming';
import { z } from 'zod';

import type { Engine } from '../engine/engine.js';
import type {
  ChatMessage,
  ChatOptions,
  CompleteOptions,
  FunctionTool,
  Generation,
  TokenLogprob,
} from '../chat/generate.js';
import {
  clientLeft,
  content,
  effort,
  errorBody,
  HttpError,
  jsonSchemaFormat,
  MAX_MESSAGES,
  MAX_PROMPT_IDS,
  MAX_TOOLS,
  partsText,
  readJson,
  responseFormatOf,
  sampling,
  samplingOptions,
  toHttp,
  toolChoiceOf,
} from './http.js';
import type { RequestLog } from './log.js';
import { labelValue, latencyHistograms } from './metrics.js';
import { registerResponses } from './responses.js';

export interface ServerOptions {
  /** The model id clients name (default: the engine's model reference). */
  modelId: string;
  /** Bearer token every route but /health requires; several keys (one per user) are compared alike. */
  apiKey?: string | readonly string[];
  /** Largest request body in bytes (default 4 MiB). */
  maxBodyBytes?: number;
  /** Names the Host header may give (port aside) besides localhost, 127.0.0.1, [::1] and the host
   * listen() bound; '*' accepts any. A request that arrives on a non-loopback address (the server
   * bound to 0.0.0.0 or a LAN address) may give any name unless this is set. */
  allowedHosts?: readonly string[];
  /** Origins (scheme://host[:port]) whose pages may call the server, with CORS headers; '*' any.
   * The server's own origin (a page it served, same host and port) needs no entry; any other
   * Origin is refused with 403. */
  allowedOrigins?: readonly string[];
  /** Who shares prefix-cache pages: 'none' (every request; the default with one key or none),
   * 'key' (each API key its own; the default with several), 'user' (each key and OpenAI `user`
   * field, for a gateway that sets it). A request's `cache_salt` narrows any of them. */
  cacheIsolation?: 'none' | 'key' | 'user';
  /** A request's deadline in ms: past it, its work is aborted (504, or the stream ends). Default none. */
  requestTimeoutMs?: number;
  /** A response whose client takes none of its waiting output for this long is aborted and its
   * connection closed (default 30 s)... */
  writeTimeoutMs?: number;
  /** ... and so is one with more than this many bytes waiting for that long (default 4 MiB; a
   * large unstreamed answer to a slow client counts too). */
  maxBufferedBytes?: number;
  /** Called once per request when its response has ended (see requestLogger in ./log.js). */
  log?: (r: RequestLog) => void;
}

/** A Host header's (or URL host's) name: lower case, without port, brackets or a final dot. */
function hostName(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) h = h.slice(1, h.includes(']') ? h.indexOf(']') : undefined);
  else if (h.indexOf(':') === h.lastIndexOf(':')) h = h.split(':')[0]; // host:port (more colons: bare IPv6)
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/** A socket address without the IPv4-in-IPv6 prefix a dual-stack listener gives it. */
const plainAddress = (a: string) => (a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a).toLowerCase();
const isLoopback = (a: string) => a.startsWith('127.') || a === '::1';

/** The host each app was bound to by listen(): one of the names its Host check accepts. */
const boundHosts = new WeakMap<Hono, Set<string>>();

/** What listen()'s drain shares with an app: whether it is draining (new requests get 503) and
 * the requests in flight, each with the controller its work runs under (the drain's deadline
 * aborts it with `shutDown`). */
interface Lifecycle {
  draining: boolean;
  inFlight: Set<AbortController>;
  /** Called when inFlight next becomes empty. */
  idle: (() => void)[];
}
const lifecycles = new WeakMap<Hono, Lifecycle>();
const shutDown = () =>
  new HttpError(503, 'server_error', 'the server shut down before the request finished', null, 'shutting_down');

/**
 * Cuts off a response whose client stopped reading: output waiting that the connection has taken
 * none of for `timeoutMs`, or more than `maxBytes` waiting for that long, closes the connection,
 * which aborts the request (its sequence stops; the SSE writer stops waiting). Progress is what
 * the socket has handed to the kernel (bytesWritten counts what is still queued too).
 */
function watchWrites(out: ServerResponse, timeoutMs: number, maxBytes: number): void {
  const socket = out.socket;
  if (!socket) return;
  let sent = socket.bytesWritten - socket.writableLength;
  let stalledSince: number | undefined;
  let overSince: number | undefined;
  const tick = setInterval(
    () => {
      const waiting = socket.writableLength;
      const now = socket.bytesWritten - waiting;
      if (waiting === 0 || now !== sent) stalledSince = undefined;
      else stalledSince ??= Date.now();
      if (waiting <= maxBytes) overSince = undefined;
      else overSince ??= Date.now();
      sent = now;
      const since = Math.min(stalledSince ?? Infinity, overSince ?? Infinity);
      if (Date.now() - since >= timeoutMs) {
        clearInterval(tick);
        socket.destroy();
      }
    },
    Math.max(10, Math.min(1000, timeoutMs / 4)),
  );
  tick.unref();
  out.once('close', () => clearInterval(tick));
}

const chatRequest = z
  .object({
    model: z.string(),
    messages: z
      .array(
        z
          .object({
            role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
            content,
            name: z.string().optional(),
            reasoning_content: z.string().nullable().optional(),
            reasoning: z.string().nullable().optional(),
            tool_call_id: z.string().optional(),
            tool_calls: z
              .array(
                z.object({
                  id: z.string().optional(),
                  type: z.literal('function').optional(),
                  function: z.object({ name: z.string(), arguments: z.string() }),
                }),
              )
              .nullable()
              .optional(),
          })
          .passthrough(),
      )
      .min(1)
      .max(MAX_MESSAGES),
    tools: z
      .array(
        z.object({
          type: z.literal('function'),
          function: z.object({
            name: z.string(),
            description: z.string().optional(),
            parameters: z.record(z.string(), z.unknown()).optional(),
            strict: z.boolean().nullable().optional(),
          }),
        }),
      )
      .max(MAX_TOOLS)
      .nullable()
      .optional(),
    tool_choice: z
      .union([
        z.enum(['auto', 'none', 'required']),
        z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) }),
      ])
      .nullable()
      .optional(),
    reasoning_effort: effort.nullable().optional(),
    // OpenRouter's form: {effort, exclude}
    reasoning: z
      .object({ effort: effort.optional(), exclude: z.boolean().optional() })
      .passthrough()
      .nullable()
      .optional(),
    max_tokens: z.number().int().min(1).nullable().optional(),
    max_completion_tokens: z.number().int().min(1).nullable().optional(),
    logprobs: z.boolean().nullable().optional(),
    top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
    response_format: z
      .discriminatedUnion('type', [
        z.object({ type: z.literal('text') }).passthrough(),
        z.object({ type: z.literal('json_object') }).passthrough(),
        z.object({ type: z.literal('json_schema'), json_schema: jsonSchemaFormat }).passthrough(),
      ])
      .nullable()
      .optional(),
    ...sampling,
  })
  .passthrough();

const completionRequest = z
  .object({
    model: z.string(),
    prompt: z.union([
      z.string(),
      z.array(z.number().int().min(0)).min(1).max(MAX_PROMPT_IDS),
      z.array(z.string()).length(1),
    ]),
    max_tokens: z.number().int().min(1).nullable().optional(),
    echo: z.literal(false).nullable().optional(),
    logprobs: z.number().int().min(0).max(20).nullable().optional(),
    ...sampling,
  })
  .passthrough();

/** OpenAI chat messages -> the engine's chat messages. */
function toChat(b: z.infer<typeof chatRequest>): { messages: ChatMessage[]; options: ChatOptions } {
  // tool_choice 'none' still renders the tools: earlier calls in the conversation refer to them.
  const tools: FunctionTool[] = (b.tools ?? []).map((t) => ({
    name: t.function.name,
    description: t.function.description,
    parameters: t.function.parameters as FunctionTool['parameters'],
    ...(t.function.strict && { strict: true }),
  }));
  const messages: ChatMessage[] = b.messages.map((m) => {
    switch (m.role) {
      case 'system':
      case 'developer':
      case 'user':
        return { role: m.role, content: partsText(m.content) };
      case 'assistant':
        return {
          role: 'assistant',
          content: partsText(m.content) || null,
          reasoning: m.reasoning_content ?? m.reasoning ?? null,
          ...(m.tool_calls?.length && {
            toolCalls: m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
          }),
        };
      default:
        return { role: 'tool', name: m.name, toolCallId: m.tool_call_id, content: partsText(m.content) };
    }
  });
  const options: ChatOptions = { ...samplingOptions(b) };
  if (tools.length) options.tools = tools;
  const eff = b.reasoning_effort ?? b.reasoning?.effort;
  if (eff) options.reasoningEffort = eff;
  const max = b.max_completion_tokens ?? b.max_tokens;
  if (max != null) options.maxTokens = max;
  if (b.logprobs) options.logprobs = b.top_logprobs ?? 0;
  const rf = b.response_format;
  const format = responseFormatOf(
    rf?.type === 'json_schema' ? { ...rf.json_schema, type: rf.type } : rf,
    'response_format.json_schema',
  );
  if (format) options.responseFormat = format;
  const choice = toolChoiceOf(b.tool_choice);
  if (choice) options.toolChoice = choice;
  return { messages, options };
}

/** A token's log-probability as chat completions spell it. */
function chatLogprob(t: TokenLogprob) {
  return {
    token: t.text,
    logprob: t.logprob,
    bytes: t.bytes,
    top_logprobs: t.top.map((a) => ({ token: a.text, logprob: a.logprob, bytes: a.bytes })),
  };
}

/** Completions' older shape: parallel arrays, alternatives as {text: logprob}. */
function completionLogprobs(list: TokenLogprob[], textStart = 0) {
  let offset = textStart;
  const text_offset = list.map((t) => {
    const o = offset;
    offset += t.text.length;
    return o;
  });
  return {
    tokens: list.map((t) => t.text),
    token_logprobs: list.map((t) => t.logprob),
    top_logprobs: list.map((t) => Object.fromEntries(t.top.map((a) => [a.text, a.logprob]))),
    text_offset,
  };
}

/**
 * n answers to one request. The first runs alone until it has produced a token, so its prompt's
 * whole pages are in the engine's prefix cache before the others start: they share those pages.
 * With a seed, answer i uses seed + i (different, reproducible). Every answer's promise is
 * observed from the moment it starts, so one failing while another still runs (the client left,
 * the queue was full) fails the request, never the process; the first failure stops the rest.
 */
async function nResults<R>(
  n: number,
  seed: number | undefined,
  signal: AbortSignal,
  start: (seed: number | undefined, signal: AbortSignal) => Generation<{ type: string }, R>,
): Promise<R[]> {
  const stop = new AbortController();
  const both = AbortSignal.any([signal, stop.signal]);
  const first = start(seed, both);
  const it = first[Symbol.asyncIterator]();
  const head = await it.next();
  const all: Promise<R>[] = [
    (async () => {
      if (!head.done) for (let r = await it.next(); !r.done; r = await it.next());
      return first.result();
    })(),
  ];
  for (let i = 1; i < n; i++) all.push(start(seed === undefined ? undefined : seed + i, both).result());
  try {
    return await Promise.all(all);
  } catch (e) {
    stop.abort();
    await Promise.allSettled(all); // their pages are back before the error goes out
    throw e;
  }
}

export function createApp(engine: Engine, options: ServerOptions): Hono {
  const app = new Hono();
  const created = Math.floor(Date.now() / 1000);
  const counters = { requests: new Map<string, number>() };
  const count = (route: string, status: number) => {
    const k = `${route}|${status}`;
    counters.requests.set(k, (counters.requests.get(k) ?? 0) + 1);
  };
  let idSeq = 0;
  const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}${(idSeq++).toString(36)}`;

  app.onError((e, c) => {
    const h = toHttp(e);
    count(c.req.routePath, h.status); // the route pattern: client-chosen paths must not grow the metrics
    if (h.status === 429) c.header('Retry-After', '1'); // the queue turns over as answers finish
    return c.json(errorBody(h), h.status as 400);
  });
  app.notFound((c) =>
    c.json(errorBody(new HttpError(404, 'not_found_error', `no route ${c.req.method} ${c.req.path}`)), 404),
  );

  // Each request's record: its tokens (counted as they are generated), for its log line once its
  // response has ended (a stream's last byte) and for the latency histograms of /metrics.
  const life: Lifecycle = { draining: false, inFlight: new Set(), idle: [] };
  lifecycles.set(app, life);
  const latency = latencyHistograms();
  // ac: what the request's work runs under (signalOf): the client leaving, its deadline, the drain's.
  type Rec = { t0: number; tokensIn: number; tokensOut: number; generated: boolean; ac: AbortController };
  const records = new WeakMap<Context, Rec>();
  const routeOf = (c: Context) => [...matchedRoutes(c)].reverse().find((r) => r.method !== 'ALL')?.path ?? c.req.path;
  app.use('*', async (c, next) => {
    const rec: Rec = { t0: performance.now(), tokensIn: 0, tokensOut: 0, generated: false, ac: new AbortController() };
    records.set(c, rec);
    const client = c.req.raw.signal;
    if (client.aborted) rec.ac.abort(client.reason);
    else client.addEventListener('abort', () => rec.ac.abort(client.reason), { once: true });
    const tracked = !life.draining; // one that arrives while draining is refused below
    if (tracked) life.inFlight.add(rec.ac);
    const out = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    const ended =
      out && typeof out.once === 'function' ? new Promise<void>((r) => out.once('close', () => r())) : undefined;
    try {
      await next();
    } finally {
      const end = () => {
        const ms = performance.now() - rec.t0;
        const status = c.res.status;
        if (rec.generated && status < 400) latency.e2e.observe(ms / 1e3);
        options.log?.({
          method: c.req.method,
          route: routeOf(c),
          status,
          tokensIn: rec.tokensIn,
          tokensOut: rec.tokensOut,
          ms,
        });
        if (tracked && life.inFlight.delete(rec.ac) && life.inFlight.size === 0)
          for (const f of life.idle.splice(0)) f();
      };
      if (ended) void ended.then(end);
      else end();
    }
  });
  // Draining (listen()'s drain): the requests in flight finish, new ones are refused.
  app.use('*', async (c, next) => {
    if (life.draining) {
      c.header('Connection', 'close');
      throw new HttpError(
        503,
        'server_error',
        'the server is shutting down and takes no new requests',
        null,
        'shutting_down',
      );
    }
    await next();
  });

  // Host and Origin, as Ollama checks them against DNS rebinding: a page on another site may not
  // drive the server, nor one whose name resolves to it (the Host check on loopback, the Origin
  // check everywhere). Names are the loopback ones, the bound host, the address the request came
  // in on, and allowedHosts.
  const names = new Set(['localhost', '127.0.0.1', '::1', ...(options.allowedHosts ?? []).map(hostName)]);
  const bound = new Set<string>();
  boundHosts.set(app, bound);
  const origins = new Set((options.allowedOrigins ?? []).map((o) => o.trim().toLowerCase().replace(/\/+$/, '')));
  const listedOrigin = (o: string) => origins.has('*') || origins.has(o.toLowerCase().replace(/\/+$/, ''));
  const localAddress = (c: Context) => {
    const a = (c.env as { incoming?: { socket?: { localAddress?: string } } } | undefined)?.incoming?.socket
      ?.localAddress;
    return a ? plainAddress(a) : undefined;
  };
  const named = (name: string, local: string | undefined) => names.has(name) || bound.has(name) || name === local;
  const refuse = (what: string) =>
    new HttpError(
      403,
      'permission_error',
      `${what} is not allowed here (see the server's allowed hosts and origins)`,
      null,
      'forbidden',
    );
  app.use('*', async (c, next) => {
    const host = c.req.header('host');
    const local = localAddress(c);
    if (host !== undefined) {
      const name = hostName(host);
      const open = names.has('*') || (local !== undefined && !isLoopback(local) && options.allowedHosts === undefined);
      if (!open && !named(name, local)) throw refuse(`Host ${JSON.stringify(name)}`);
    }
    const origin = c.req.header('origin');
    if (origin !== undefined && !listedOrigin(origin)) {
      // The server's own pages: same scheme-less host and port as the request, under a known name.
      let same = false;
      try {
        const u = new URL(origin);
        same =
          host !== undefined &&
          (u.protocol === 'http:' || u.protocol === 'https:') &&
          u.host === new URL(`${u.protocol}//${host}`).host &&
          named(hostName(u.host), local);
      } catch {
        // not a URL ('null' from a file or a sandbox): not ours
      }
      if (!same) throw refuse(`Origin ${JSON.stringify(origin)}`);
    }
    await next();
  });
  if (origins.size) {
    const corsFor = cors({
      origin: (o) => (listedOrigin(o) ? o : null),
      allowMethods: ['GET', 'POST', 'OPTIONS'],
      exposeHeaders: ['Retry-After'],
      maxAge: 600,
    });
    app.use('*', (c, next) =>
      c.req.header('origin') && listedOrigin(c.req.header('origin')!) ? corsFor(c, next) : next(),
    );
  }

  // The API key: compared as SHA-256 digests with timingSafeEqual, against every key, so neither
  // the time taken nor which key matched tells a guesser anything.
  const keys = (typeof options.apiKey === 'string' ? [options.apiKey] : (options.apiKey ?? [])).filter((k) => k !== '');
  const digests = keys.map((k) => createHash('sha256').update(k).digest());
  const callerKey = new WeakMap<Context, number>(); // by context: bodyLimit may replace c.req.raw
  const auth = async (c: Context, next: () => Promise<void>) => {
    if (digests.length) {
      const header = c.req.header('authorization') ?? '';
      const given = createHash('sha256')
        .update(header.startsWith('Bearer ') ? header.slice(7) : `\0${header}`)
        .digest();
      let match = -1;
      digests.forEach((d, i) => {
        if (timingSafeEqual(d, given) && match < 0) match = i;
      });
      if (match < 0)
        throw new HttpError(
          401,
          'authentication_error',
          'a valid API key is required (Authorization: Bearer <key>)',
          null,
          'invalid_api_key',
        );
      callerKey.set(c, match);
    }
    await next();
  };
  app.use('/v1/*', auth);
  app.use('/metrics', auth);

  // A known route asked with a method it does not take: 405 naming those it does (Allow), before
  // the body is looked at. Hono answers HEAD with a GET route.
  let routeMethods: { pattern: RegExp; method: string }[] | undefined;
  app.use('*', async (c, next) => {
    routeMethods ??= app.routes
      .filter((r) => r.method !== 'ALL')
      .map((r) => ({
        pattern: new RegExp(`^${r.path.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[^/]+/g, '[^/]+')}$`),
        method: r.method,
      }));
    const methods = [...new Set(routeMethods.filter((r) => r.pattern.test(c.req.path)).map((r) => r.method))];
    if (methods.includes('GET')) methods.push('HEAD');
    if (methods.length && !methods.includes(c.req.method)) {
      c.header('Allow', methods.join(', '));
      throw new HttpError(
        405,
        'invalid_request_error',
        `${c.req.method} is not allowed on ${c.req.path}; it takes ${methods.join(', ')}`,
        null,
        'method_not_allowed',
      );
    }
    await next();
  });

  // Only JSON bodies: a browser sends text/plain, form or multipart bodies cross-site without
  // asking first (a "simple" request); JSON needs a preflight, which the Origin check refuses.
  app.use('*', async (c, next) => {
    if (c.req.method === 'POST' || c.req.method === 'PUT' || c.req.method === 'PATCH') {
      const type = c.req.header('content-type')?.split(';')[0].trim().toLowerCase();
      if (type !== 'application/json' && !(type?.startsWith('application/') && type.endsWith('+json')))
        throw new HttpError(
          415,
          'invalid_request_error',
          `request bodies must be JSON (Content-Type: application/json)${type ? `, not ${type}` : ''}`,
          null,
          'unsupported_media_type',
        );
    }
    await next();
  });

  // Each response's connection is watched (watchWrites); each request may have a deadline, which
  // the routes' work runs under (signalOf).
  const writeTimeout = options.writeTimeoutMs ?? 30_000;
  const maxBuffered = options.maxBufferedBytes ?? 4 * 2 ** 20;
  app.use('*', async (c, next) => {
    const out = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    if (out && typeof out.once === 'function') watchWrites(out, writeTimeout, maxBuffered);
    const ms = options.requestTimeoutMs;
    const ac = records.get(c)?.ac;
    if (ms && ac) {
      const timer = setTimeout(
        () =>
          ac.abort(
            new HttpError(
              504,
              'server_error',
              `the request ran past the server's deadline of ${ms} ms`,
              null,
              'request_timeout',
            ),
          ),
        ms,
      );
      timer.unref();
      out?.once?.('close', () => clearTimeout(timer));
    }
    await next();
  });
  const signalOf = (c: Context) => records.get(c)?.ac.signal ?? c.req.raw.signal;
  /** Whether the request's work was cut short by the drain's deadline: a stream then ends as if by
   * length, with its finish_reason and [DONE], not an error. */
  const cutShort = (c: Context) => {
    const r: unknown = records.get(c)?.ac.signal.reason;
    return r instanceof HttpError && r.code === 'shutting_down';
  };
  /** A cut request's usage: the tokens its sequences took in and gave (the engine's own count
   * comes with an answer's end, which a cut answer never reaches). */
  const cutUsage = (c: Context) => ({
    prompt: records.get(c)?.tokensIn ?? 0,
    completion: records.get(c)?.tokensOut ?? 0,
  });
  /**
   * The engine as one request's generations see it: their tokens are counted for the request's log
   * line and timed for /metrics, and a token limit the context cannot hold is refused with a 400
   * naming the numbers, as OpenAI does, where the engine would cut it down to what is left. A view
   * of the engine with its own start(): engine.chat() and complete() start sequences on `this`.
   */
  const engineFor = (c: Context, limit: { field: string; value: number | null | undefined }): Engine => {
    const rec = records.get(c);
    const start: Engine['start'] = (prompt, sampler, limits) => {
      const C = engine.defaultContext;
      if (limit.value != null && prompt.length + limit.value > C)
        throw new HttpError(
          400,
          'invalid_request_error',
          `${limit.field} is too large: prompt ${prompt.length} + ${limit.field} ${limit.value} > context ${C} ` +
            `(at most ${C - prompt.length} tokens can follow this prompt)`,
          limit.field,
          'context_length_exceeded',
        );
      const decoder = engine.start(prompt, sampler, limits);
      const t0 = rec?.t0 ?? performance.now();
      if (rec) {
        rec.tokensIn = prompt.length;
        rec.generated = true;
      }
      let last: number | undefined;
      return {
        next: async () => {
          const token = await decoder.next();
          const now = performance.now();
          (last === undefined ? latency.ttft : latency.itl).observe((now - (last ?? t0)) / 1e3);
          last = now;
          if (rec) rec.tokensOut++;
          return token;
        },
        close: () => decoder.close(),
        get cachedTokens() {
          return decoder.cachedTokens;
        },
      };
    };
    return Object.create(engine, { start: { value: start } }) as Engine;
  };

  // Prefix-cache salt: the caller's key or user (cacheIsolation) and the request's cache_salt.
  const isolation = options.cacheIsolation ?? (keys.length > 1 ? 'key' : 'none');
  const cacheSalt = (c: Context, b: { cache_salt?: string | null; user?: string }): string | undefined => {
    const parts: string[] = [];
    const key = callerKey.get(c);
    if (isolation !== 'none' && key !== undefined) parts.push(`key:${key}`);
    if (isolation === 'user' && b.user) parts.push(`user:${b.user}`);
    if (b.cache_salt) parts.push(`salt:${b.cache_salt}`);
    return parts.length ? JSON.stringify(parts) : undefined;
  };
  app.use(
    '/v1/*',
    bodyLimit({
      maxSize: options.maxBodyBytes ?? 4 * 2 ** 20,
      onError: (c) =>
        c.json(
          errorBody(
            new HttpError(
              413,
              'invalid_request_error',
              `the request body is over ${options.maxBodyBytes ?? 4 * 2 ** 20} bytes`,
              null,
              'request_too_large',
            ),
          ),
          413,
        ),
    }),
  );

  const body = readJson;
  const checkModel = (model: string) => {
    if (model !== options.modelId)
      throw new HttpError(
        404,
        'not_found_error',
        `model ${JSON.stringify(model)} is not served here; this server serves ${JSON.stringify(options.modelId)}`,
        'model',
        'model_not_found',
      );
  };

  app.get('/health', (c) => c.json({ status: 'ok', ...engine.stats() }));

  app.get('/v1/models', (c) =>
    c.json({ object: 'list', data: [{ id: options.modelId, object: 'model', created, owned_by: 'node-gpt-oss' }] }),
  );
  app.get('/v1/models/:id', (c) => {
    checkModel(c.req.param('id'));
    return c.json({ id: options.modelId, object: 'model', created, owned_by: 'node-gpt-oss' });
  });

  app.post('/v1/chat/completions', async (c) => {
    const b = chatRequest.parse(await body(c));
    checkModel(b.model);
    const { messages, options: chatOpts } = toChat(b);
    chatOpts.cacheSalt = cacheSalt(c, b);
    const id = newId('chatcmpl');
    const now = Math.floor(Date.now() / 1000);
    const signal = signalOf(c);
    const finish = (r: string) => (r === 'tool-calls' ? 'tool_calls' : r);
    const n = b.n ?? 1;
    const served = engineFor(
      c,
      b.max_completion_tokens != null
        ? { field: 'max_completion_tokens', value: b.max_completion_tokens }
        : { field: 'max_tokens', value: b.max_tokens },
    );
    if (!b.stream) {
      const results = await nResults(n, chatOpts.seed, signal, (seed, sig) =>
        served.chat(messages, { ...chatOpts, ...(seed !== undefined && { seed }), signal: sig }),
      );
      count('/v1/chat/completions', 200);
      const sum = (f: (r: (typeof results)[0]) => number) => results.reduce((a, r) => a + f(r), 0);
      return c.json({
        id,
        object: 'chat.completion',
        created: now,
        model: options.modelId,
        choices: results.map((r, index) => ({
          index,
          message: {
            role: 'assistant',
            content: r.text || (r.toolCalls.length ? null : ''),
            reasoning_content: r.reasoning || null,
            reasoning: r.reasoning || null,
            refusal: null,
            ...(r.toolCalls.length && {
              tool_calls: r.toolCalls.map((t) => ({
                id: t.id,
                type: 'function',
                function: { name: t.name, arguments: t.rawArguments },
              })),
            }),
          },
          finish_reason: finish(r.finishReason),
          logprobs: r.logprobs ? { content: r.logprobs.map(chatLogprob), refusal: null } : null,
        })),
        usage: {
          prompt_tokens: results[0].usage.promptTokens,
          completion_tokens: sum((r) => r.usage.completionTokens),
          total_tokens: results[0].usage.promptTokens + sum((r) => r.usage.completionTokens),
          prompt_tokens_details: { cached_tokens: results[0].usage.cachedPromptTokens ?? 0 },
          completion_tokens_details: { reasoning_tokens: sum((r) => r.usage.reasoningTokens ?? 0) },
        },
      });
    }
    // Streaming: the first answer starts before the response, so that errors such as an
    // overloaded engine still get a status code of their own; with n > 1 the others start once
    // it has its first token (its prompt pages are then cached for them to share), and the
    // choices' chunks interleave as they come. One answer failing ends them all.
    const stop = new AbortController();
    const both = AbortSignal.any([signal, stop.signal]);
    const start = (i: number) =>
      served
        .chat(messages, {
          ...chatOpts,
          ...(chatOpts.seed !== undefined && { seed: chatOpts.seed + i }),
          signal: both,
        })
        [Symbol.asyncIterator]();
    const its = [start(0)];
    const first = await its[0].next();
    for (let i = 1; i < n; i++) its.push(start(i));
    count('/v1/chat/completions', 200);
    return streamSSE(c, async (stream) => {
      let chain = Promise.resolve();
      const send = (data: string) => (chain = chain.then(() => stream.writeSSE({ data })));
      const chunk = (
        index: number,
        delta: object,
        finishReason: string | null = null,
        logprobs: object | null = null,
      ) =>
        send(
          JSON.stringify({
            id,
            object: 'chat.completion.chunk',
            created: now,
            model: options.modelId,
            choices: [{ index, delta, finish_reason: finishReason, logprobs }],
          }),
        );
      const total = { prompt: 0, completion: 0, cached: 0, reasoning: 0 };
      const finished = new Set<number>();
      const choice = async (index: number) => {
        const it = its[index];
        await chunk(index, { role: 'assistant', content: '' });
        let calls = 0;
        for (let r = index === 0 ? first : await it.next(); !r.done; r = await it.next()) {
          const ev = r.value;
          if (ev.type === 'text') await chunk(index, { content: ev.delta });
          else if (ev.type === 'reasoning' && !b.reasoning?.exclude)
            await chunk(index, { reasoning_content: ev.delta, reasoning: ev.delta });
          else if (ev.type === 'logprob')
            await chunk(index, {}, null, { content: [chatLogprob(ev.logprob)], refusal: null });
          else if (ev.type === 'tool-call')
            await chunk(index, {
              tool_calls: [
                {
                  index: calls++,
                  id: ev.id,
                  type: 'function',
                  function: { name: ev.name, arguments: ev.rawArguments },
                },
              ],
            });
          else if (ev.type === 'done') {
            finished.add(index);
            await chunk(index, {}, finish(ev.finishReason));
            total.prompt = ev.usage.promptTokens;
            total.completion += ev.usage.completionTokens;
            total.cached = index === 0 ? (ev.usage.cachedPromptTokens ?? 0) : total.cached;
            total.reasoning += ev.usage.reasoningTokens ?? 0;
          }
        }
      };
      // usage if asked, then [DONE]: how every stream ends, cut short by the drain too
      const tail = async () => {
        if (b.stream_options?.include_usage)
          await send(
            JSON.stringify({
              id,
              object: 'chat.completion.chunk',
              created: now,
              model: options.modelId,
              choices: [],
              usage: {
                prompt_tokens: total.prompt,
                completion_tokens: total.completion,
                total_tokens: total.prompt + total.completion,
                prompt_tokens_details: { cached_tokens: total.cached },
                completion_tokens_details: { reasoning_tokens: total.reasoning },
              },
            }),
          );
        await send('[DONE]');
      };
      try {
        await Promise.all(its.map((_, i) => choice(i)));
        await tail();
      } catch (e) {
        stop.abort();
        await chain.catch(() => {});
        if (clientLeft(c.req.raw.signal, e)) return;
        if (cutShort(c)) {
          chain = Promise.resolve();
          for (let i = 0; i < n; i++) if (!finished.has(i)) await chunk(i, {}, 'length');
          Object.assign(total, cutUsage(c));
          return void (await tail());
        }
        await stream.writeSSE({ data: JSON.stringify(errorBody(toHttp(e))) });
      }
    });
  });

  app.post('/v1/completions', async (c) => {
    const b = completionRequest.parse(await body(c));
    checkModel(b.model);
    const prompt = Array.isArray(b.prompt)
      ? typeof b.prompt[0] === 'string'
        ? (b.prompt[0] as string)
        : (b.prompt as number[])
      : b.prompt;
    const signal = signalOf(c);
    const opts: CompleteOptions = {
      ...samplingOptions(b),
      maxTokens: b.max_tokens ?? 16,
      stopTokens: [],
      signal,
      cacheSalt: cacheSalt(c, b),
    };
    if (b.logprobs != null) opts.logprobs = b.logprobs;
    const id = newId('cmpl');
    const now = Math.floor(Date.now() / 1000);
    const n = b.n ?? 1;
    const served = engineFor(c, { field: 'max_tokens', value: b.max_tokens });
    if (!b.stream) {
      const results = await nResults(n, opts.seed, signal, (seed, sig) =>
        served.complete(prompt, { ...opts, ...(seed !== undefined && { seed }), signal: sig }),
      );
      count('/v1/completions', 200);
      const out = results.reduce((a, r) => a + r.usage.completionTokens, 0);
      return c.json({
        id,
        object: 'text_completion',
        created: now,
        model: options.modelId,
        choices: results.map((r, index) => ({
          index,
          text: r.text,
          finish_reason: r.finishReason,
          logprobs: r.logprobs ? completionLogprobs(r.logprobs) : null,
        })),
        usage: {
          prompt_tokens: results[0].usage.promptTokens,
          completion_tokens: out,
          total_tokens: results[0].usage.promptTokens + out,
        },
      });
    }
    // Streaming, n > 1 included: as for chat completions.
    const stop = new AbortController();
    const both = AbortSignal.any([signal, stop.signal]);
    const start = (i: number) =>
      served
        .complete(prompt, {
          ...opts,
          ...(opts.seed !== undefined && { seed: opts.seed + i }),
          signal: both,
        })
        [Symbol.asyncIterator]();
    const its = [start(0)];
    const first = await its[0].next();
    for (let i = 1; i < n; i++) its.push(start(i));
    count('/v1/completions', 200);
    return streamSSE(c, async (stream) => {
      let chain = Promise.resolve();
      const send = (data: string) => (chain = chain.then(() => stream.writeSSE({ data })));
      const total = { prompt: 0, completion: 0 };
      const finished = new Set<number>();
      const end = (index: number, reason: string) => ({
        id,
        object: 'text_completion',
        created: now,
        model: options.modelId,
        choices: [{ index, text: '', finish_reason: reason, logprobs: null }],
      });
      const choice = async (index: number) => {
        const it = its[index];
        for (let r = index === 0 ? first : await it.next(); !r.done; r = await it.next()) {
          const ev = r.value;
          if (ev.type === 'done') {
            finished.add(index);
            total.prompt = ev.usage.promptTokens;
            total.completion += ev.usage.completionTokens;
          }
          const data =
            ev.type === 'token' || ev.type === 'text'
              ? {
                  id,
                  object: 'text_completion',
                  created: now,
                  model: options.modelId,
                  choices: [
                    {
                      index,
                      text: ev.text,
                      finish_reason: null,
                      logprobs: ev.type === 'token' && ev.logprobs ? completionLogprobs([ev.logprobs]) : null,
                    },
                  ],
                }
              : end(index, ev.finishReason);
          await send(JSON.stringify(data));
        }
      };
      // usage if asked, then [DONE]: how every stream ends, cut short by the drain too
      const tail = async () => {
        if (b.stream_options?.include_usage)
          await send(
            JSON.stringify({
              id,
              object: 'text_completion',
              created: now,
              model: options.modelId,
              choices: [],
              usage: {
                prompt_tokens: total.prompt,
                completion_tokens: total.completion,
                total_tokens: total.prompt + total.completion,
              },
            }),
          );
        await send('[DONE]');
      };
      try {
        await Promise.all(its.map((_, i) => choice(i)));
        await tail();
      } catch (e) {
        stop.abort();
        await chain.catch(() => {});
        if (clientLeft(c.req.raw.signal, e)) return;
        if (cutShort(c)) {
          chain = Promise.resolve();
          for (let i = 0; i < n; i++) if (!finished.has(i)) await send(JSON.stringify(end(i, 'length')));
          Object.assign(total, cutUsage(c));
          return void (await tail());
        }
        await stream.writeSSE({ data: JSON.stringify(errorBody(toHttp(e))) });
      }
    });
  });

  registerResponses(app, {
    modelId: options.modelId,
    newId,
    count,
    checkModel,
    signalOf,
    cacheSalt,
    engineFor,
    cutShort,
  });

  const modelLabel = `model_name="${labelValue(options.modelId)}"`;
  app.get('/metrics', (c) => {
    const s = engine.stats();
    // [name, type, help, value]: one Prometheus family each.
    const metric = (name: string, type: 'counter' | 'gauge', help: string, value: number | string) => [
      `# HELP ${name} ${help}`,
      `# TYPE ${name} ${type}`,
      `${name} ${value}`,
    ];
    const lines = [
      '# HELP gptoss_requests_total HTTP requests by route and status.',
      '# TYPE gptoss_requests_total counter',
      ...[...counters.requests].map(([k, v]) => {
        const [route, status] = k.split('|');
        return `gptoss_requests_total{route="${route}",status="${status}"} ${v}`;
      }),
      ...metric('gptoss_prompt_tokens_total', 'counter', 'Prompt tokens run through the model.', s.promptTokens),
      ...metric('gptoss_generated_tokens_total', 'counter', 'Tokens generated.', s.generatedTokens),
      ...metric('gptoss_sequences_running', 'gauge', 'Sequences in the running batch.', s.running),
      ...metric('gptoss_queue_depth', 'gauge', 'Requests waiting for admission.', s.queued),
      ...metric('gptoss_kv_pages_used', 'gauge', 'KV cache pages in use.', s.kvPagesUsed),
      ...metric('gptoss_kv_pages_total', 'gauge', 'KV cache pages in all.', s.kvPagesTotal),
      ...metric(
        'gptoss_prefix_pages_reused_total',
        'counter',
        'KV pages taken from the prefix cache.',
        s.prefixPagesReused,
      ),
      ...metric('gptoss_steps_total', 'counter', 'Forward passes run.', s.steps),
      ...metric(
        'gptoss_step_seconds_total',
        'counter',
        'Time spent in forward passes.',
        (s.stepMsTotal / 1e3).toFixed(6),
      ),
      ...metric(
        'gptoss_last_step_seconds',
        'gauge',
        'Duration of the latest forward pass.',
        (s.lastStepMs / 1e3).toFixed(6),
      ),
      // vLLM's names, which dashboards and autoscalers expect, labelled with the model as vLLM does.
      ...[
        ['vllm:num_requests_running', 'Requests in the running batch.', s.running],
        ['vllm:num_requests_waiting', 'Requests waiting for admission (queue depth).', s.queued],
      ].flatMap(([name, help, v]) => [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name}{${modelLabel}} ${v}`]),
      ...latency.ttft.lines(modelLabel),
      ...latency.itl.lines(modelLabel),
      ...latency.e2e.lines(modelLabel),
    ];
    return c.text(`${lines.join('\n')}\n`, 200, { 'Content-Type': 'text/plain; version=0.0.4' });
  });

  return app;
}

export interface RunningServer {
  url: string;
  /** Closes every connection now: requests in flight are cut (their sequences aborted). */
  close(): Promise<void>;
  /**
   * Stops gracefully: new requests get 503 (OpenAI error `shutting_down`), those in flight may
   * finish until `deadlineMs` (default 30 s); past it their work is aborted, and a stream still
   * open ends as if by length (its finish_reason, usage if asked, `[DONE]`; `/v1/responses`:
   * `response.incomplete`) while an unstreamed request gets the 503. Then it closes. Resolves
   * with how many requests were in flight and how many of them were cut.
   */
  drain(options?: { deadlineMs?: number }): Promise<{ inFlight: number; cut: number }>;
}

export interface ListenOptions {
  /** Address to bind (default 127.0.0.1); the app's Host check accepts it as a name. */
  host?: string;
  /** Port (default 8000; 0: any free one). */
  port?: number;
  /** Open connections at most; more are closed on arrival (default: no cap). */
  maxConnections?: number;
}

/** Serves the app on host:port (port 0: any free one); binds to loopback unless told otherwise. */
export async function listen(app: Hono, options: ListenOptions = {}): Promise<RunningServer> {
  const host = options.host ?? '127.0.0.1';
  boundHosts.get(app)?.add(hostName(host));
  let server: ServerType | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    server = serve({ fetch: app.fetch, hostname: host, port: options.port ?? 8000 }, (info) => resolve(info.port));
    server.on('error', reject);
    if (options.maxConnections !== undefined) (server as Server).maxConnections = options.maxConnections;
  });
  const close = () =>
    new Promise<void>((resolve) => {
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      server!.close(() => resolve());
    });
  const life = lifecycles.get(app);
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close,
    drain: async ({ deadlineMs = 30_000 } = {}) => {
      if (!life) return (await close(), { inFlight: 0, cut: 0 });
      life.draining = true;
      const inFlight = life.inFlight.size;
      const idle = () => new Promise<void>((r) => (life.inFlight.size === 0 ? r() : life.idle.push(r)));
      const after = (ms: number) => new Promise<'late'>((r) => setTimeout(() => r('late'), ms).unref());
      let cut = 0;
      if ((await Promise.race([idle(), after(deadlineMs)])) === 'late') {
        cut = life.inFlight.size;
        for (const ac of life.inFlight) ac.abort(shutDown());
        // Streams end within a step; a client that does not read its last bytes is not waited for.
        await Promise.race([idle(), after(5000)]);
      }
      await close();
      return { inFlight, cut };
    },
  };
}
