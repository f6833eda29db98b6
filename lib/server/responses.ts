// POST /v1/responses: gpt-oss's native API shape (stateless). Input items become chat messages;
// the engine's events become output items — reasoning, message, function_call — and, when
// streaming, the event sequence the openai SDK's ResponseStream expects (response.created,
// output_item.added, content_part.added, *.delta, *.done, output_item.done, response.completed).
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { z } from 'zod';

import type { Engine } from '../engine/engine.js';
import type { ChatEvent, ChatMessage, ChatOptions, ChatResult, FunctionTool, TokenLogprob } from '../chat/generate.js';
import {
  clientLeft,
  effort,
  jsonSchemaFormat,
  MAX_CONTENT_PARTS,
  MAX_MESSAGES,
  MAX_TOOLS,
  readJson,
  responseFormatOf,
  sampling,
  samplingOptions,
  toHttp,
  toolChoiceOf,
} from './http.js';

const textPart = z.object({ type: z.enum(['input_text', 'output_text', 'text']), text: z.string() }).passthrough();
const item = z.union([
  z
    .object({
      type: z.literal('message').optional(),
      role: z.enum(['user', 'system', 'developer', 'assistant']),
      content: z.union([z.string(), z.array(textPart).max(MAX_CONTENT_PARTS)]),
    })
    .passthrough(),
  z
    .object({ type: z.literal('function_call'), call_id: z.string(), name: z.string(), arguments: z.string() })
    .passthrough(),
  z.object({ type: z.literal('function_call_output'), call_id: z.string(), output: z.string() }).passthrough(),
  z
    .object({
      type: z.literal('reasoning'),
      content: z.array(z.object({ type: z.literal('reasoning_text'), text: z.string() }).passthrough()).optional(),
    })
    .passthrough(),
]);

const request = z
  .object({
    model: z.string(),
    input: z.union([z.string(), z.array(item).min(1).max(MAX_MESSAGES)]),
    instructions: z.string().nullable().optional(),
    tools: z
      .array(
        z
          .object({
            type: z.literal('function'),
            name: z.string(),
            description: z.string().nullable().optional(),
            parameters: z.record(z.string(), z.unknown()).nullable().optional(),
            strict: z.boolean().nullable().optional(),
          })
          .passthrough(),
      )
      .max(MAX_TOOLS)
      .nullable()
      .optional(),
    tool_choice: z
      .union([
        z.enum(['auto', 'none', 'required']),
        z.object({ type: z.literal('function'), name: z.string() }).passthrough(),
      ])
      .nullable()
      .optional(),
    reasoning: z.object({ effort: effort.nullable().optional() }).passthrough().nullable().optional(),
    max_output_tokens: z.number().int().min(1).nullable().optional(),
    // Chat completions' sampling fields are accepted here too (an extension, as in vLLM).
    ...sampling,
    previous_response_id: z
      .null()
      .optional()
      .or(
        z.string().transform((_, ctx) => {
          ctx.addIssue({
            code: 'custom',
            message: 'previous_response_id is not supported: this server keeps no state; send the whole input',
          });
          return z.NEVER;
        }),
      ),
    text: z
      .object({
        format: z
          .discriminatedUnion('type', [
            z.object({ type: z.literal('text') }).passthrough(),
            z.object({ type: z.literal('json_object') }).passthrough(),
            jsonSchemaFormat.extend({ type: z.literal('json_schema') }),
          ])
          .nullable()
          .optional(),
      })
      .passthrough()
      .nullable()
      .optional(),
    include: z.array(z.string()).nullable().optional(),
    top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  })
  .passthrough();

type Request = z.infer<typeof request>;

function toChat(b: Request): { messages: ChatMessage[]; options: ChatOptions } {
  const messages: ChatMessage[] = [];
  const text = (c: string | z.infer<typeof textPart>[]) => (typeof c === 'string' ? c : c.map((p) => p.text).join(''));
  let reasoning: string | null = null;
  const items = typeof b.input === 'string' ? [{ role: 'user' as const, content: b.input }] : b.input;
  for (const it of items) {
    if (!('type' in it) || it.type === 'message' || it.type === undefined) {
      const m = it as {
        role: 'user' | 'system' | 'developer' | 'assistant';
        content: string | z.infer<typeof textPart>[];
      };
      if (m.role === 'assistant') {
        messages.push({ role: 'assistant', content: text(m.content), reasoning });
        reasoning = null;
      } else messages.push({ role: m.role, content: text(m.content) });
    } else if (it.type === 'reasoning') {
      reasoning = ((it as { content?: { text: string }[] }).content ?? []).map((p) => p.text).join('');
    } else if (it.type === 'function_call') {
      const call = it as { call_id: string; name: string; arguments: string };
      messages.push({
        role: 'assistant',
        reasoning,
        toolCalls: [{ id: call.call_id, name: call.name, arguments: call.arguments }],
      });
      reasoning = null;
    } else {
      const out = it as { call_id: string; output: string };
      messages.push({ role: 'tool', toolCallId: out.call_id, content: out.output });
    }
  }
  const options: ChatOptions = { ...samplingOptions(b) };
  if (b.instructions) options.instructions = b.instructions;
  if (b.tools?.length)
    options.tools = b.tools.map((t): FunctionTool => ({
      name: t.name,
      description: t.description ?? undefined,
      parameters: (t.parameters ?? undefined) as FunctionTool['parameters'],
      ...(t.strict && { strict: true }),
    }));
  const format = responseFormatOf(b.text?.format, 'text.format');
  if (format) options.responseFormat = format;
  const choice = toolChoiceOf(b.tool_choice);
  if (choice) options.toolChoice = choice;
  if (b.reasoning?.effort) options.reasoningEffort = b.reasoning.effort;
  if (b.max_output_tokens != null) options.maxTokens = b.max_output_tokens;
  if (b.include?.includes('message.output_text.logprobs')) options.logprobs = b.top_logprobs ?? 0;
  return { messages, options };
}

type OutputLogprob = {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
};
const outputLogprob = (t: TokenLogprob): OutputLogprob => ({
  token: t.text,
  logprob: t.logprob,
  bytes: t.bytes,
  top_logprobs: t.top.map((a) => ({ token: a.text, logprob: a.logprob, bytes: a.bytes })),
});

type OutputItem =
  | { type: 'reasoning'; id: string; summary: []; content: { type: 'reasoning_text'; text: string }[] }
  | {
      type: 'message';
      id: string;
      status: 'completed' | 'in_progress';
      role: 'assistant';
      content: { type: 'output_text'; text: string; annotations: []; logprobs: OutputLogprob[] }[];
    }
  | { type: 'function_call'; id: string; call_id: string; name: string; arguments: string; status: 'completed' };

export interface ResponsesContext {
  modelId: string;
  newId: (prefix: string) => string;
  count: (route: string, status: number) => void;
  checkModel: (model: string) => void;
  /** The signal the request's work runs under (the client leaving, the server's deadline). */
  signalOf: (c: Context) => AbortSignal;
  /** The prefix-cache salt for this caller and request. */
  cacheSalt: (c: Context, b: { cache_salt?: string | null; user?: string }) => string | undefined;
  /** The engine as this request sees it (its token limit checked against the context). */
  engineFor: (c: Context, limit: { field: string; value: number | null | undefined }) => Engine;
  /** Whether the request was cut short by the server's drain (a stream then ends as incomplete). */
  cutShort: (c: Context) => boolean;
}

export function registerResponses(app: Hono, ctx: ResponsesContext): void {
  app.post('/v1/responses', async (c: Context) => {
    const b = request.parse(await readJson(c));
    ctx.checkModel(b.model);
    const { messages, options } = toChat(b);
    const id = ctx.newId('resp');
    const createdAt = Math.floor(Date.now() / 1000);
    const signal = ctx.signalOf(c);
    const gen = ctx
      .engineFor(c, { field: 'max_output_tokens', value: b.max_output_tokens })
      .chat(messages, { ...options, signal, cacheSalt: ctx.cacheSalt(c, b) });
    const shell = (status: string, output: OutputItem[], r?: ChatResult) => ({
      id,
      object: 'response',
      created_at: createdAt,
      status,
      model: ctx.modelId,
      output,
      incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
      error: null,
      instructions: b.instructions ?? null,
      tools: b.tools ?? [],
      tool_choice: b.tool_choice ?? 'auto',
      parallel_tool_calls: false,
      temperature: b.temperature ?? 1,
      top_p: b.top_p ?? 1,
      max_output_tokens: b.max_output_tokens ?? null,
      reasoning: { effort: b.reasoning?.effort ?? 'medium', summary: null },
      text: { format: { type: 'text' } },
      metadata: {},
      usage: r
        ? {
            input_tokens: r.usage.promptTokens,
            input_tokens_details: { cached_tokens: r.usage.cachedPromptTokens ?? 0 },
            output_tokens: r.usage.completionTokens,
            output_tokens_details: { reasoning_tokens: r.usage.reasoningTokens ?? 0 },
            total_tokens: r.usage.totalTokens,
          }
        : null,
    });
    const status = (r: ChatResult) => (r.finishReason === 'length' ? 'incomplete' : 'completed');

    if (!b.stream) {
      const r = await gen.result();
      const output: OutputItem[] = [];
      if (r.reasoning)
        output.push({
          type: 'reasoning',
          id: ctx.newId('rs'),
          summary: [],
          content: [{ type: 'reasoning_text', text: r.reasoning }],
        });
      const said = r.commentary + r.text;
      if (said || !r.toolCalls.length)
        output.push({
          type: 'message',
          id: ctx.newId('msg'),
          status: 'completed',
          role: 'assistant',
          content: [
            { type: 'output_text', text: said, annotations: [], logprobs: (r.logprobs ?? []).map(outputLogprob) },
          ],
        });
      for (const t of r.toolCalls)
        output.push({
          type: 'function_call',
          id: ctx.newId('fc'),
          call_id: t.id,
          name: t.name,
          arguments: t.rawArguments,
          status: 'completed',
        });
      ctx.count('/v1/responses', 200);
      return c.json(shell(status(r), output, r));
    }

    const it = gen[Symbol.asyncIterator]();
    const first = await it.next();
    ctx.count('/v1/responses', 200);
    return streamSSE(c, async (stream) => {
      let seq = 0;
      const send = (type: string, data: object) =>
        stream.writeSSE({ event: type, data: JSON.stringify({ type, sequence_number: seq++, ...data }) });
      const output: OutputItem[] = [];
      // The item being written: reasoning or message text grows by deltas until the kind changes.
      let open: { kind: 'reasoning' | 'message'; index: number; item: OutputItem; text: string } | undefined;
      const close = async () => {
        if (!open) return;
        const { index, item, text } = open;
        open = undefined;
        if (item.type === 'reasoning') {
          item.content[0].text = text;
          await send('response.reasoning_text.done', { item_id: item.id, output_index: index, content_index: 0, text });
          await send('response.content_part.done', {
            item_id: item.id,
            output_index: index,
            content_index: 0,
            part: item.content[0],
          });
        } else if (item.type === 'message') {
          item.content[0].text = text;
          item.status = 'completed';
          await send('response.output_text.done', {
            item_id: item.id,
            output_index: index,
            content_index: 0,
            text,
            logprobs: item.content[0].logprobs,
          });
          await send('response.content_part.done', {
            item_id: item.id,
            output_index: index,
            content_index: 0,
            part: item.content[0],
          });
        }
        await send('response.output_item.done', { output_index: index, item });
      };
      const delta = async (kind: 'reasoning' | 'message', d: string) => {
        if (open?.kind !== kind) {
          await close();
          const index = output.length;
          const item: OutputItem =
            kind === 'reasoning'
              ? { type: 'reasoning', id: ctx.newId('rs'), summary: [], content: [{ type: 'reasoning_text', text: '' }] }
              : {
                  type: 'message',
                  id: ctx.newId('msg'),
                  status: 'in_progress',
                  role: 'assistant',
                  content: [{ type: 'output_text', text: '', annotations: [], logprobs: [] }],
                };
          output.push(item);
          open = { kind, index, item, text: '' };
          // Announced empty; content_part.added then appends part 0 (the SDK checks that order).
          await send('response.output_item.added', { output_index: index, item: { ...item, content: [] } });
          await send('response.content_part.added', {
            item_id: item.id,
            output_index: index,
            content_index: 0,
            part:
              kind === 'reasoning'
                ? { type: 'reasoning_text', text: '' }
                : { type: 'output_text', text: '', annotations: [], logprobs: [] },
          });
        }
        open!.text += d;
        const common = { item_id: open!.item.id, output_index: open!.index, content_index: 0, delta: d };
        await send(
          kind === 'reasoning' ? 'response.reasoning_text.delta' : 'response.output_text.delta',
          kind === 'reasoning' ? common : { ...common, logprobs: [] },
        );
      };
      await send('response.created', { response: shell('in_progress', []) });
      await send('response.in_progress', { response: shell('in_progress', []) });
      try {
        for (let r = first; !r.done; r = await it.next()) {
          const ev: ChatEvent = r.value;
          if (ev.type === 'reasoning') await delta('reasoning', ev.delta);
          else if (ev.type === 'text' || ev.type === 'commentary') await delta('message', ev.delta);
          else if (ev.type === 'logprob' && open?.item.type === 'message')
            open.item.content[0].logprobs.push(outputLogprob(ev.logprob));
          else if (ev.type === 'tool-call') {
            await close();
            const index = output.length;
            const item: OutputItem = {
              type: 'function_call',
              id: ctx.newId('fc'),
              call_id: ev.id,
              name: ev.name,
              arguments: '',
              status: 'completed',
            };
            output.push(item);
            await send('response.output_item.added', { output_index: index, item: { ...item, status: 'in_progress' } });
            await send('response.function_call_arguments.delta', {
              item_id: item.id,
              output_index: index,
              delta: ev.rawArguments,
            });
            item.arguments = ev.rawArguments;
            await send('response.function_call_arguments.done', {
              item_id: item.id,
              output_index: index,
              arguments: ev.rawArguments,
            });
            await send('response.output_item.done', { output_index: index, item });
          }
        }
        await close();
        const r = await gen.result();
        await send(status(r) === 'completed' ? 'response.completed' : 'response.incomplete', {
          response: shell(status(r), output, r),
        });
      } catch (e) {
        if (clientLeft(c.req.raw.signal, e)) return;
        if (ctx.cutShort(c)) {
          await close();
          return void (await send('response.incomplete', { response: shell('incomplete', output) }));
        }
        const h = toHttp(e);
        await send('error', { code: h.code, message: h.message, param: h.param });
      }
    });
  });
}
