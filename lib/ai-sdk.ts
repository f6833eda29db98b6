// An AI SDK language model (`@ai-sdk/provider`'s LanguageModelV4) backed by an in-process engine:
// `generateText`, `streamText`, `generateObject` and tools from the `ai` package run gpt-oss
// without a server. Import it from `node-gpt-oss/ai-sdk`.
import { randomUUID } from 'node:crypto';

import type {
  LanguageModelV4,
  LanguageModelV4CallOptions,
  LanguageModelV4Content,
  LanguageModelV4FinishReason,
  LanguageModelV4GenerateResult,
  LanguageModelV4Prompt,
  LanguageModelV4StreamPart,
  LanguageModelV4StreamResult,
  LanguageModelV4Usage,
  SharedV4Warning,
} from '@ai-sdk/provider';

import type { Engine } from './engine/engine.js';
import { UnsupportedError } from './errors.js';
import type {
  ChatEvent,
  ChatMessage,
  ChatOptions,
  FinishReason,
  FunctionTool,
  ToolCall,
  Usage,
} from './chat/generate.js';
import type { JsonSchema } from './chat/harmony/types.js';

export interface GptOssModelSettings {
  /** The id reported in results (default `gpt-oss`). */
  modelId?: string;
  /** Options applied to every call (e.g. reasoningEffort, minP); the call's settings win. */
  defaults?: Partial<
    Pick<ChatOptions, 'reasoningEffort' | 'minP' | 'repetitionPenalty' | 'logitBias' | 'instructions' | 'maxContext'>
  >;
}

/** Per-call options under `providerOptions['gpt-oss']`. */
export type GptOssProviderOptions = Partial<
  Pick<ChatOptions, 'reasoningEffort' | 'minP' | 'repetitionPenalty' | 'logitBias' | 'logprobs'>
>;

const PROVIDER_KEY = 'gpt-oss';

/** gpt-oss as an AI SDK model: `generateText({ model: gptOss(engine), prompt })`. */
export function gptOss(engine: Engine, settings: GptOssModelSettings = {}): GptOssLanguageModel {
  return new GptOssLanguageModel(engine, settings);
}

function text(parts: readonly { type: string; text?: string }[], warnings: SharedV4Warning[]): string {
  let out = '';
  for (const p of parts) {
    if (p.type === 'text') out += p.text ?? '';
    else
      warnings.push({
        type: 'unsupported',
        feature: `${p.type} parts`,
        details: 'gpt-oss reads text only; the part was left out',
      });
  }
  return out;
}

function toolOutput(o: { type: string; value?: unknown; reason?: string }): string {
  switch (o.type) {
    case 'text':
    case 'error-text':
      return String(o.value);
    case 'execution-denied':
      return `Tool execution denied${o.reason ? `: ${o.reason}` : ''}`;
    case 'content':
      return (o.value as { type: string; text?: string }[]).map((p) => p.text ?? '').join('');
    default:
      return JSON.stringify(o.value);
  }
}

/** The AI SDK's prompt as chat messages. */
function toMessages(prompt: LanguageModelV4Prompt, warnings: SharedV4Warning[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const m of prompt) {
    switch (m.role) {
      case 'system':
        out.push({ role: 'system', content: m.content });
        break;
      case 'user':
        out.push({ role: 'user', content: text(m.content, warnings) });
        break;
      case 'assistant': {
        let content = '',
          reasoning = '';
        const toolCalls: ToolCall[] = [];
        const results: ChatMessage[] = [];
        for (const p of m.content) {
          if (p.type === 'text') content += p.text;
          else if (p.type === 'reasoning') reasoning += p.text;
          else if (p.type === 'tool-call')
            toolCalls.push({
              id: p.toolCallId,
              name: p.toolName,
              arguments: typeof p.input === 'string' ? p.input : JSON.stringify(p.input),
            });
          else if (p.type === 'tool-result')
            results.push({ role: 'tool', toolCallId: p.toolCallId, name: p.toolName, content: toolOutput(p.output) });
          else warnings.push({ type: 'unsupported', feature: `assistant ${p.type} parts` });
        }
        out.push({
          role: 'assistant',
          content: content || null,
          reasoning: reasoning || null,
          ...(toolCalls.length && { toolCalls }),
        });
        out.push(...results);
        break;
      }
      case 'tool':
        for (const p of m.content)
          if (p.type === 'tool-result')
            out.push({ role: 'tool', toolCallId: p.toolCallId, name: p.toolName, content: toolOutput(p.output) });
          else warnings.push({ type: 'unsupported', feature: 'tool approval responses' });
        break;
    }
  }
  return out;
}

// gpt-oss has three efforts; the others map to the nearest.
const EFFORT = {
  none: 'low',
  minimal: 'low',
  low: 'low',
  medium: 'medium',
  high: 'high',
  xhigh: 'high',
  max: 'high',
} as const;

function toOptions(
  o: LanguageModelV4CallOptions,
  settings: GptOssModelSettings,
  warnings: SharedV4Warning[],
): ChatOptions {
  const opts: ChatOptions = {
    ...settings.defaults,
    ...(o.providerOptions?.[PROVIDER_KEY] as GptOssProviderOptions | undefined),
  };
  if (o.maxOutputTokens !== undefined) opts.maxTokens = o.maxOutputTokens;
  if (o.temperature !== undefined) opts.temperature = o.temperature;
  if (o.topP !== undefined) opts.topP = o.topP;
  if (o.topK !== undefined) opts.topK = o.topK;
  if (o.presencePenalty !== undefined) opts.presencePenalty = o.presencePenalty;
  if (o.frequencyPenalty !== undefined) opts.frequencyPenalty = o.frequencyPenalty;
  if (o.seed !== undefined) opts.seed = o.seed;
  if (o.stopSequences?.length) opts.stop = o.stopSequences;
  if (o.abortSignal) opts.signal = o.abortSignal;
  if (o.reasoning && o.reasoning !== 'provider-default') opts.reasoningEffort = EFFORT[o.reasoning];
  if (o.responseFormat?.type === 'json')
    opts.responseFormat = o.responseFormat.schema
      ? {
          type: 'json_schema',
          schema: o.responseFormat.schema as JsonSchema,
          ...(o.responseFormat.name && { name: o.responseFormat.name }),
          ...(o.responseFormat.description && { description: o.responseFormat.description }),
        }
      : { type: 'json_object' };
  const tools: FunctionTool[] = [];
  for (const t of o.tools ?? []) {
    if (t.type !== 'function') {
      warnings.push({ type: 'unsupported', feature: `provider tool ${t.id}` });
      continue;
    }
    tools.push({
      name: t.name,
      description: t.description,
      parameters: t.inputSchema as JsonSchema,
      ...(t.strict && { strict: true }),
    });
  }
  if (tools.length) opts.tools = tools;
  const choice = o.toolChoice;
  if (choice && tools.length) opts.toolChoice = choice.type === 'tool' ? { name: choice.toolName } : choice.type;
  if (o.includeRawChunks) warnings.push({ type: 'unsupported', feature: 'includeRawChunks' });
  return opts;
}

function usageOf(u: Usage): LanguageModelV4Usage {
  const cached = u.cachedPromptTokens ?? 0,
    reasoning = u.reasoningTokens ?? 0;
  return {
    inputTokens: { total: u.promptTokens, noCache: u.promptTokens - cached, cacheRead: cached, cacheWrite: undefined },
    outputTokens: { total: u.completionTokens, text: u.completionTokens - reasoning, reasoning },
  };
}

const finishOf = (f: FinishReason): LanguageModelV4FinishReason => ({ unified: f, raw: f });

export class GptOssLanguageModel implements LanguageModelV4 {
  readonly specificationVersion = 'v4';
  readonly provider = 'gpt-oss';
  readonly modelId: string;
  readonly supportedUrls = {};
  readonly #engine: Engine;
  readonly #settings: GptOssModelSettings;

  constructor(engine: Engine, settings: GptOssModelSettings = {}) {
    this.#engine = engine;
    this.#settings = settings;
    this.modelId = settings.modelId ?? 'gpt-oss';
  }

  #start(o: LanguageModelV4CallOptions) {
    const warnings: SharedV4Warning[] = [];
    const messages = toMessages(o.prompt, warnings);
    const options = toOptions(o, this.#settings, warnings);
    if (messages.length === 0) throw new UnsupportedError('the prompt holds no messages');
    // Tool call ids must be unique across calls; the engine numbers them per answer.
    const prefix = `call_${randomUUID().slice(0, 8)}`;
    return {
      gen: this.#engine.chat(messages, options),
      warnings,
      prefix,
      body: { messages, options: { ...options, signal: undefined } },
    };
  }

  async doGenerate(o: LanguageModelV4CallOptions): Promise<LanguageModelV4GenerateResult> {
    const { gen, warnings, prefix, body } = this.#start(o);
    const r = await gen.result();
    const content: LanguageModelV4Content[] = [];
    if (r.reasoning) content.push({ type: 'reasoning', text: r.reasoning });
    if (r.text) content.push({ type: 'text', text: r.text });
    for (const c of r.toolCalls)
      content.push({ type: 'tool-call', toolCallId: `${prefix}_${c.id}`, toolName: c.name, input: c.rawArguments });
    return {
      content,
      finishReason: finishOf(r.finishReason),
      usage: usageOf(r.usage),
      warnings,
      request: { body },
      response: { id: prefix.replace('call_', 'gen_'), timestamp: new Date(), modelId: this.modelId },
    } as LanguageModelV4GenerateResult;
  }

  async doStream(o: LanguageModelV4CallOptions): Promise<LanguageModelV4StreamResult> {
    const { gen, warnings, prefix, body } = this.#start(o);
    const it = gen[Symbol.asyncIterator]();
    const modelId = this.modelId;
    let open: { kind: 'text' | 'reasoning'; id: string } | undefined;
    let parts = 0;
    let started = false;
    const stream = new ReadableStream<LanguageModelV4StreamPart>({
      async pull(controller) {
        if (!started) {
          started = true;
          controller.enqueue({ type: 'stream-start', warnings });
          controller.enqueue({
            type: 'response-metadata',
            id: prefix.replace('call_', 'gen_'),
            timestamp: new Date(),
            modelId,
          });
        }
        const close = () => {
          if (open) controller.enqueue({ type: `${open.kind}-end`, id: open.id });
          open = undefined;
        };
        const delta = (kind: 'text' | 'reasoning', d: string) => {
          if (open?.kind !== kind) {
            close();
            open = { kind, id: `${kind}-${parts++}` };
            controller.enqueue({ type: `${kind}-start`, id: open.id });
          }
          controller.enqueue({ type: `${kind}-delta`, id: open.id, delta: d });
        };
        try {
          // Pull until something was enqueued for the reader (events like logprobs add nothing).
          for (;;) {
            const r = await it.next();
            if (r.done) {
              controller.close();
              return;
            }
            const ev: ChatEvent = r.value;
            if (ev.type === 'text' || ev.type === 'reasoning') {
              delta(ev.type, ev.delta);
              return;
            }
            if (ev.type === 'tool-call') {
              close();
              const id = `${prefix}_${ev.id}`;
              controller.enqueue({ type: 'tool-input-start', id, toolName: ev.name });
              controller.enqueue({ type: 'tool-input-delta', id, delta: ev.rawArguments });
              controller.enqueue({ type: 'tool-input-end', id });
              controller.enqueue({ type: 'tool-call', toolCallId: id, toolName: ev.name, input: ev.rawArguments });
              return;
            }
            if (ev.type === 'done') {
              close();
              controller.enqueue({ type: 'finish', usage: usageOf(ev.usage), finishReason: finishOf(ev.finishReason) });
              return;
            }
          }
        } catch (e) {
          controller.enqueue({ type: 'error', error: e });
          controller.close();
        }
      },
      // The reader gave up: end the generation (frees its sequence).
      async cancel() {
        await it.return?.(undefined);
      },
    });
    return { stream, request: { body } };
  }
}
