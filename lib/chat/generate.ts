// model.chat() and model.complete(): a prompt in, an async iterator of typed events out, one
// session per call (freed when the iterator ends, however it ends). Chat renders the conversation
// in the Harmony format, samples until <|return|> or <|call|> (kernels/MODEL.md, "Harmony
// completion") and turns the parsed stream into reasoning / text / tool-call events.
import { AbortedError, ContextOverflowError, HarmonyError, InvalidArgumentError } from '../errors.js';
import { encodePartsAsync, renderConversationForCompletionParts } from './harmony/render.js';
import { type HarmonyStreamEvent, StreamableParser } from './harmony/parse.js';
import {
  type HarmonyMessage,
  type JsonSchema,
  newSystemContent,
  type ReasoningEffort,
  textMessage,
} from './harmony/types.js';
import type { ModelConfig } from '../checkpoint/config.js';
import type { SampledToken } from '../backend/native.js';
import { checkInt, checkKeys, checkOneOf } from '../options.js';
import { Sampler, type SamplingOptions, samplingKeys, type TokenConstraint } from '../engine/sampler.js';
import {
  chatConstraint,
  checkSchema,
  checkToolChoice,
  formatSchema,
  type ResponseFormat,
  responseFormatSection,
  SchemaBudget,
  type ToolChoice,
} from './structured.js';
import { getTokenizer, TOKENS } from './tokenizer.js';

export type ChatMessage =
  | { role: 'system' | 'developer'; content: string }
  | { role: 'user'; content: string }
  | { role: 'assistant'; content?: string | null; reasoning?: string | null; toolCalls?: ToolCall[] }
  | { role: 'tool'; name?: string; toolCallId?: string; content: string };

export interface ToolCall {
  id?: string;
  name: string;
  /** A JSON string, or the object it encodes. */
  arguments: string | Record<string, unknown>;
}

export interface FunctionTool {
  name: string;
  description?: string;
  /** JSON Schema of the arguments object (key order is kept in the rendered prompt). */
  parameters?: JsonSchema;
  /** Constrain the call's arguments to `parameters` while they are generated. */
  strict?: boolean;
}

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 1024). */
  maxTokens?: number;
  /** Stop when the answer text contains one of these (not included in the output). */
  stop?: string | string[];
  /** Positions the session may use (default: prompt + maxTokens, within the model's context). */
  maxContext?: number;
  signal?: AbortSignal;
  /** Report each answer token's log-probability under the model's own distribution (log-softmax
   * of its logits, before temperature and the other sampling settings) with this many most
   * likely alternatives (0-20). Off by default. */
  logprobs?: number;
  /** Called as the prompt runs through the model (a model: after each step of up to 128 tokens;
   * an engine: after each batch step that carried some of it) with the prompt tokens processed so
   * far (those from a prefix cache included) and the prompt's length: progress for long prompts. */
  onPrefillProgress?: (done: number, total: number) => void;
  /** On an engine: mixed into the prefix cache's keys, so that only requests with the same salt
   * share cached prompt pages (and learn, from `cachedPromptTokens`, how another's prompt began).
   * Unsalted requests share with each other. */
  cacheSalt?: string;
}

/** A generated token with its log-probability under the model's distribution. */
export interface TokenLogprob {
  token: number;
  /** The token's text (invalid UTF-8 on its own becomes U+FFFD) and its raw bytes. */
  text: string;
  bytes: number[];
  logprob: number;
  top: { token: number; text: string; bytes: number[]; logprob: number }[];
}

export interface ChatOptions extends GenerateOptions {
  reasoningEffort?: 'low' | 'medium' | 'high';
  tools?: FunctionTool[];
  /** Developer instructions; system and developer messages in `messages` are appended to them. */
  instructions?: string;
  modelIdentity?: string;
  knowledgeCutoff?: string;
  /** YYYY-MM-DD shown to the model (default today, UTC); null leaves the line out. */
  currentDate?: string | null;
  /** The answer's format: with `json_schema` or `json_object` the final message is constrained to
   * JSON valid under the schema while it is generated (reasoning stays free). */
  responseFormat?: ResponseFormat;
  /** 'auto' (default), 'none' (no calls), 'required' (at least one call) or {name} (that tool). */
  toolChoice?: ToolChoice;
}

export type FinishReason = 'stop' | 'length' | 'tool-calls';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Prompt tokens whose KV came from the engine's prefix cache instead of being computed. */
  cachedPromptTokens?: number;
  /** Completion tokens of the analysis channel (chat). */
  reasoningTokens?: number;
}

export interface Timings {
  /** Time to the first generated token (the prompt's prefill and the first draw). */
  promptMs: number;
  /** Time for the remaining tokens. */
  generationMs: number;
  promptTokensPerSecond: number;
  tokensPerSecond: number;
}

export type ChatEvent =
  | { type: 'reasoning'; delta: string }
  | { type: 'text'; delta: string }
  | { type: 'commentary'; delta: string }
  | { type: 'tool-call'; id: string; name: string; arguments: unknown; rawArguments: string }
  /** With the logprobs option: one per token of the answer (final channel), after its text. */
  | { type: 'logprob'; logprob: TokenLogprob }
  | { type: 'done'; finishReason: FinishReason; usage: Usage; timings: Timings };

export interface ChatResult {
  text: string;
  reasoning: string;
  commentary: string;
  toolCalls: { id: string; name: string; arguments: unknown; rawArguments: string }[];
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
  /** Every generated token id, in order. */
  tokens: number[];
  /** With the logprobs option: the answer's tokens and their log-probabilities. */
  logprobs?: TokenLogprob[];
  /** The assistant's turn as messages to append to the conversation for the next call. */
  message: Extract<ChatMessage, { role: 'assistant' }>;
}

export type CompletionEvent =
  | { type: 'token'; token: number; text: string; logprob: number; logprobs?: TokenLogprob }
  /** Text that no token carried: held back until the end (part of a character, a stop prefix). */
  | { type: 'text'; text: string }
  | { type: 'done'; finishReason: 'stop' | 'length'; usage: Usage; timings: Timings };

export interface CompleteOptions extends GenerateOptions {
  /** Token ids that end the completion (default <|return|> and <|call|>). */
  stopTokens?: number[];
}

export interface CompletionResult {
  tokens: number[];
  text: string;
  logprobs?: TokenLogprob[];
  finishReason: 'stop' | 'length';
  usage: Usage;
  timings: Timings;
}

/** An async iterator of events that can also be awaited whole with result(). Iterate once. */
export class Generation<E extends { type: string }, R> implements AsyncIterable<E> {
  readonly #start: () => AsyncGenerator<E, R>;
  #started = false;
  #result: R | undefined;

  constructor(start: () => AsyncGenerator<E, R>) {
    this.#start = start;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<E, void> {
    if (this.#started) throw new InvalidArgumentError('a generation can be iterated once');
    this.#started = true;
    // yield* passes a consumer's break (return) through, so the inner finally frees the session.
    this.#result = yield* this.#start();
  }

  /** Runs the generation to the end (if not iterated yet) and returns the whole result. */
  async result(): Promise<R> {
    if (!this.#started) for await (const _ of this);
    if (this.#result === undefined) throw new InvalidArgumentError('the generation has not finished');
    return this.#result;
  }
}

const generateKeys = [
  'maxTokens',
  'stop',
  'maxContext',
  'signal',
  'logprobs',
  'cacheSalt',
  'onPrefillProgress',
  ...samplingKeys,
] as const;

function toTokenLogprob(s: SampledToken): TokenLogprob {
  const tok = getTokenizer();
  const piece = (id: number) => ({ text: tok.decode([id]), bytes: Array.from(tok.decodeBytes([id])) });
  return {
    token: s.token,
    ...piece(s.token),
    logprob: s.modelLogprob ?? s.logprob,
    top: (s.top ?? []).map((t) => ({ token: t.token, ...piece(t.token), logprob: t.logprob })),
  };
}
const chatKeys = [
  ...generateKeys,
  'reasoningEffort',
  'tools',
  'instructions',
  'modelIdentity',
  'knowledgeCutoff',
  'currentDate',
  'responseFormat',
  'toolChoice',
] as const;

const CHAT_STOP_TOKENS: ReadonlySet<number> = new Set([TOKENS.return, TOKENS.call]);

const effortName: Record<string, ReasoningEffort> = { low: 'Low', medium: 'Medium', high: 'High' };

function samplingOf(o: SamplingOptions): SamplingOptions {
  return Object.fromEntries(samplingKeys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
}

function asString(v: unknown, what: string): string {
  if (typeof v !== 'string')
    throw new InvalidArgumentError(`${what} must be a string, got ${v === null ? 'null' : typeof v}`);
  return v;
}

/** Tools one request may declare (OpenAI's limit). */
export const MAX_TOOLS = 128;

/** The Harmony conversation for a chat request (exported for tests and the server). */
export function toHarmony(messages: readonly ChatMessage[], options: ChatOptions = {}): HarmonyMessage[] {
  if (!Array.isArray(messages) || messages.length === 0)
    throw new InvalidArgumentError('messages must be a non-empty array');
  const tools = options.tools ?? [];
  if (tools.length > MAX_TOOLS)
    throw new InvalidArgumentError(`tools: at most ${MAX_TOOLS} tools are supported, got ${tools.length}`);
  const toolNames = new Set<string>();
  for (const [i, t] of tools.entries()) {
    if (typeof t?.name !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(t.name))
      throw new InvalidArgumentError(`tools[${i}].name must be letters, digits, '_', '.' or '-'`);
    if (toolNames.has(t.name)) throw new InvalidArgumentError(`tools[${i}]: a second tool named ${t.name}`);
    toolNames.add(t.name);
  }
  const today = new Date().toISOString().slice(0, 10);
  const out: HarmonyMessage[] = [
    {
      role: 'system',
      content: [
        newSystemContent({
          reasoning_effort:
            effortName[
              checkOneOf(options.reasoningEffort, ['low', 'medium', 'high'] as const, 'reasoningEffort', 'medium')
            ],
          ...(options.modelIdentity !== undefined && {
            model_identity: asString(options.modelIdentity, 'modelIdentity'),
          }),
          ...(options.knowledgeCutoff !== undefined && {
            knowledge_cutoff: asString(options.knowledgeCutoff, 'knowledgeCutoff'),
          }),
          conversation_start_date: options.currentDate === undefined ? today : options.currentDate,
        }),
      ],
    },
  ];
  const instructions = options.instructions !== undefined ? [asString(options.instructions, 'instructions')] : [];
  const body: HarmonyMessage[] = [];
  const callNames = new Map<string, string>(); // tool call id -> tool name
  const known = (name: string, where: string) => {
    const bare = name.startsWith('functions.') ? name.slice('functions.'.length) : name;
    if (!toolNames.has(bare))
      throw new InvalidArgumentError(
        `${where}: unknown tool ${JSON.stringify(name)}; the request's tools are ${[...toolNames].join(', ') || '(none)'}`,
      );
    return bare;
  };
  messages.forEach((m, i) => {
    const where = `messages[${i}]`;
    switch (m?.role) {
      case 'system':
      case 'developer':
        instructions.push(asString(m.content, `${where}.content`));
        break;
      case 'user':
        body.push(textMessage('user', asString(m.content, `${where}.content`)));
        break;
      case 'assistant': {
        if (m.reasoning)
          body.push(textMessage('assistant', asString(m.reasoning, `${where}.reasoning`), { channel: 'analysis' }));
        const calls: ToolCall[] = m.toolCalls ?? [];
        if (m.content)
          body.push(
            textMessage('assistant', asString(m.content, `${where}.content`), {
              channel: calls.length ? 'commentary' : 'final',
            }),
          );
        calls.forEach((c, j) => {
          const name = known(c.name, `${where}.toolCalls[${j}]`);
          const args = typeof c.arguments === 'string' ? c.arguments : JSON.stringify(c.arguments);
          if (c.id) callNames.set(c.id, name);
          body.push(
            textMessage('assistant', args, {
              recipient: `functions.${name}`,
              channel: 'commentary',
              content_type: '<|constrain|>json',
            }),
          );
        });
        break;
      }
      case 'tool': {
        const name = m.name ?? (m.toolCallId !== undefined ? callNames.get(m.toolCallId) : undefined);
        if (name === undefined)
          throw new InvalidArgumentError(`${where}: a tool message needs a name or the toolCallId of an earlier call`);
        const bare = known(name, where);
        body.push(
          textMessage('tool', asString(m.content, `${where}.content`), {
            name: `functions.${bare}`,
            recipient: 'assistant',
            channel: 'commentary',
          }),
        );
        break;
      }
      default:
        throw new InvalidArgumentError(`${where}.role must be system, developer, user, assistant or tool`);
    }
  });
  const format = responseFormatSection(options.responseFormat);
  if (instructions.length || tools.length || format)
    out.push({
      role: 'developer',
      content: [
        {
          type: 'developer_content',
          instructions: instructions.length ? instructions.join('\n\n') : null,
          ...(format && { response_formats: format }),
          tools: tools.length
            ? {
                functions: {
                  name: 'functions',
                  tools: tools.map((t) => ({
                    name: t.name,
                    description: t.description ?? '',
                    parameters: t.parameters ?? null,
                  })),
                },
              }
            : null,
        },
      ],
    });
  return [...out, ...body];
}

/** Holds back text that could be the start of a stop string, and cuts at the first match. */
class StopMatcher {
  readonly #stops: string[];
  #held = '';
  constructor(stops: string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }
  push(delta: string): { emit: string; stopped: boolean } {
    if (this.#stops.length === 0) return { emit: delta, stopped: false };
    this.#held += delta;
    let cut = -1;
    for (const s of this.#stops) {
      const at = this.#held.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const emit = this.#held.slice(0, cut);
      this.#held = '';
      return { emit, stopped: true };
    }
    // Keep the longest suffix that is a prefix of some stop string.
    let keep = 0;
    for (const s of this.#stops)
      for (let k = Math.min(s.length - 1, this.#held.length); k > keep; k--)
        if (this.#held.endsWith(s.slice(0, k))) {
          keep = k;
          break;
        }
    const emit = this.#held.slice(0, this.#held.length - keep);
    this.#held = this.#held.slice(this.#held.length - keep);
    return { emit, stopped: false };
  }
  flush(): string {
    const h = this.#held;
    this.#held = '';
    return h;
  }
}

/** One sequence being generated: the sampled tokens one by one, then close(). The backend records
 * each token it samples in the sampler (for the penalties) before it samples the next. */
export interface Decoder {
  /** The next sampled token (the first call runs the prompt). */
  next(): Promise<SampledToken>;
  /** Ends the sequence early or after its last token and frees what it holds; idempotent. */
  close(): void;
  /** Prompt tokens taken from a prefix cache, known once the first token has come. */
  readonly cachedTokens?: number;
}

export interface DecodeLimits {
  maxTokens: number;
  maxContext: number;
  /** Tokens after which no further token is asked for (the caller still receives the stop token). */
  stopTokens: ReadonlySet<number>;
  signal?: AbortSignal;
  /** Prefix-cache salt (GenerateOptions.cacheSalt). */
  cacheSalt?: string;
  /** GenerateOptions.onPrefillProgress. */
  onPrefillProgress?: (done: number, total: number) => void;
}

/** What generates: a model (one session per call) or an engine (one sequence of a shared batch). */
export interface GenerationBackend {
  readonly config: ModelConfig;
  /** The context a single request may use by default. */
  readonly defaultContext: number;
  start(prompt: number[], sampler: Sampler, limits: DecodeLimits): Decoder;
}

interface Prepared {
  decoder: Decoder;
  maxTokens: number;
}

function prepare(
  backend: GenerationBackend,
  prompt: number[],
  options: GenerateOptions,
  stopTokens: ReadonlySet<number>,
  constraint?: TokenConstraint,
): Prepared {
  const cfg = backend.config;
  const V = cfg.vocabSize;
  const maxTokens = checkInt(options.maxTokens, 'maxTokens', 1024, 1);
  for (let i = 0; i < prompt.length; i++)
    if (!Number.isInteger(prompt[i]) || prompt[i] < 0 || prompt[i] >= V)
      throw new InvalidArgumentError(
        `prompt token ${JSON.stringify(prompt[i])} at index ${i} is not an id in [0, ${V})`,
      );
  if (prompt.length === 0) throw new InvalidArgumentError('the prompt is empty');
  const limit = checkInt(
    options.maxContext,
    'maxContext',
    Math.min(backend.defaultContext, prompt.length + maxTokens),
    1,
    cfg.maxContext,
  );
  if (prompt.length >= limit)
    throw new ContextOverflowError(
      `the prompt is ${prompt.length} tokens; the context allows ${limit} (room is needed for at least one generated token)`,
    );
  if (options.onPrefillProgress !== undefined && typeof options.onPrefillProgress !== 'function')
    throw new InvalidArgumentError('onPrefillProgress must be a function');
  const sampler = new Sampler(samplingOf(options), V);
  if (options.logprobs !== undefined) sampler.topLogprobs = checkInt(options.logprobs, 'logprobs', 0, 0, 20);
  sampler.constraint = constraint;
  const budget = Math.min(maxTokens, limit - prompt.length);
  let decoder: Decoder;
  try {
    decoder = backend.start(prompt, sampler, {
      maxTokens: budget,
      maxContext: limit,
      stopTokens,
      signal: options.signal,
      cacheSalt: options.cacheSalt,
      onPrefillProgress: options.onPrefillProgress,
    });
  } catch (e) {
    constraint?.dispose();
    throw e;
  }
  const close = decoder.close.bind(decoder);
  decoder.close = () => {
    close();
    constraint?.dispose();
  };
  return { decoder, maxTokens: budget };
}

const now = () => performance.now();

function timings(t0: number, tFirst: number, tEnd: number, promptTokens: number, generated: number): Timings {
  const promptMs = tFirst - t0,
    generationMs = tEnd - tFirst;
  return {
    promptMs,
    generationMs,
    promptTokensPerSecond: promptMs > 0 ? (promptTokens / promptMs) * 1e3 : 0,
    tokensPerSecond: generationMs > 0 ? ((generated - 1) / generationMs) * 1e3 : 0,
  };
}

/**
 * Turns the tokens of an assistant turn, as they are sampled, into chat events: Harmony's
 * streaming parser (non-strict, so a refusal with no header still reads as text), channels mapped
 * to reasoning / text / commentary, tool calls parsed as JSON at their end, stop strings cut.
 */
export class ChatStream {
  readonly #parser = new StreamableParser('assistant', { strict: false });
  readonly #stop: StopMatcher;
  #calls = 0;
  /** A stop string ended the answer (what it held back is not text then). */
  #cut = false;
  /** Set once the turn is over: a stop token, or a stop string in the answer. */
  finishReason: FinishReason | null = null;
  readonly result: Omit<ChatResult, 'finishReason' | 'usage' | 'timings' | 'message' | 'tokens' | 'logprobs'> = {
    text: '',
    reasoning: '',
    commentary: '',
    toolCalls: [],
  };

  constructor(stops: string[] = []) {
    this.#stop = new StopMatcher(stops);
  }

  /** Whether the last token pushed was part of the answer's text (final channel content). */
  lastWasAnswer = false;
  /** Tokens consumed as analysis-channel content. */
  reasoningTokens = 0;

  /** Events completed by one sampled token. Throws HarmonyError on tool arguments that are not JSON. */
  push(token: number): ChatEvent[] {
    // A content token: the parser was in a message body before it and still is after it.
    const inBody = this.#parser.state === 'Content' && this.#parser.currentRecipient === null;
    const channel = this.#parser.currentChannel;
    const out = this.#translate(this.#parser.process(token));
    const stillBody = inBody && this.#parser.state === 'Content';
    this.lastWasAnswer = stillBody && channel !== 'analysis' && channel !== 'commentary';
    if (stillBody && channel === 'analysis') this.reasoningTokens++;
    if (this.finishReason === null && (token === TOKENS.return || token === TOKENS.call))
      this.finishReason = token === TOKENS.call ? 'tool-calls' : 'stop';
    return out;
  }

  /** Events once the turn is over: for a turn cut short, what the model wrote so far; in any case
   * text held back as a possible start of a stop string that never came. */
  end(): ChatEvent[] {
    const out = this.finishReason === null ? this.#translate(this.#parser.processEos()) : [];
    const rest = this.#stop.flush();
    if (rest && !this.#cut) {
      this.result.text += rest;
      out.push({ type: 'text', delta: rest });
    }
    return out;
  }

  #translate(events: HarmonyStreamEvent[]): ChatEvent[] {
    const out: ChatEvent[] = [];
    for (const ev of events) {
      if (this.finishReason !== null) break;
      if (ev.type === 'content-delta') {
        if (ev.recipient) continue; // tool arguments: emitted whole at the message's end
        if (ev.channel === 'analysis') {
          this.result.reasoning += ev.delta;
          out.push({ type: 'reasoning', delta: ev.delta });
        } else if (ev.channel === 'commentary') {
          this.result.commentary += ev.delta;
          out.push({ type: 'commentary', delta: ev.delta });
        } else {
          const s = this.#stop.push(ev.delta);
          if (s.emit) {
            this.result.text += s.emit;
            out.push({ type: 'text', delta: s.emit });
          }
          if (s.stopped) {
            this.finishReason = 'stop';
            this.#cut = true;
          }
        }
      } else if (ev.type === 'message-end' && ev.message.recipient && ev.message.recipient !== 'all') {
        const raw = ev.message.content.map((p) => (p.type === 'text' ? p.text : '')).join('');
        const r = ev.message.recipient;
        const name = r.startsWith('functions.') ? r.slice('functions.'.length) : r;
        let args: unknown;
        try {
          args = JSON.parse(raw);
        } catch (e) {
          throw new HarmonyError(
            `the model called ${name} with arguments that are not JSON: ${JSON.stringify(raw.slice(0, 200))}`,
            { cause: e },
          );
        }
        const call = { id: `call_${this.#calls++}`, name, arguments: args, rawArguments: raw };
        this.result.toolCalls.push(call);
        out.push({ type: 'tool-call', ...call });
      }
    }
    return out;
  }
}

export function chat(
  backend: GenerationBackend,
  messages: readonly ChatMessage[],
  options: ChatOptions = {},
): Generation<ChatEvent, ChatResult> {
  checkKeys(options, chatKeys, 'chat');
  // Rendering checks the messages now; encoding waits for the generation and runs a large prompt
  // off the event loop (a long one took the event loop for seconds).
  const parts = renderConversationForCompletionParts(toHarmony(messages, options), 'assistant');
  // One budget for the request's schemas together: each alone is bounded, but not 128 of them.
  const budget = new SchemaBudget();
  const finalSchema = formatSchema(options.responseFormat, 'responseFormat', budget);
  const strictTools = new Map<string, JsonSchema>();
  (options.tools ?? []).forEach((t, i) => {
    if (!t.strict) return;
    const schema = t.parameters ?? { type: 'object', properties: {} };
    checkSchema(schema, `tools[${i}].parameters`, budget);
    strictTools.set(t.name, schema);
  });
  const toolNames = (options.tools ?? []).map((t) => t.name);
  const toolChoice = checkToolChoice(options.toolChoice, toolNames, 'toolChoice');
  const stops = options.stop === undefined ? [] : Array.isArray(options.stop) ? options.stop : [options.stop];
  stops.forEach((s, i) => asString(s, `stop[${i}]`));
  const signal = options.signal;
  return new Generation(async function* () {
    const prompt = await encodePartsAsync(parts);
    if (signal?.aborted) throw new AbortedError('generation was aborted', { cause: signal.reason });
    const constraint = chatConstraint(finalSchema, strictTools, toolNames, toolChoice, backend.config.vocabSize);
    // The grammars are compiled before the sequence joins the backend: on an engine, a step that
    // waited on one request's compile (seconds, for a costly schema) stalled every stream.
    await constraint?.compile();
    if (signal?.aborted) throw new AbortedError('generation was aborted', { cause: signal.reason });
    const { decoder, maxTokens } = prepare(backend, prompt, options, CHAT_STOP_TOKENS, constraint);
    const stream = new ChatStream(stops);
    let generated = 0;
    const tokens: number[] = [];
    const logprobs: TokenLogprob[] | undefined = options.logprobs !== undefined ? [] : undefined;
    const t0 = now();
    let tFirst = t0;
    try {
      let step = await decoder.next();
      tFirst = now();
      for (;;) {
        generated++;
        tokens.push(step.token);
        yield* stream.push(step.token);
        if (logprobs && stream.lastWasAnswer && stream.finishReason === null) {
          const lp = toTokenLogprob(step);
          logprobs.push(lp);
          yield { type: 'logprob', logprob: lp };
        }
        if (stream.finishReason !== null || generated >= maxTokens) break;
        if (signal?.aborted) throw new AbortedError('generation was aborted', { cause: signal.reason });
        step = await decoder.next();
      }
      yield* stream.end();
    } finally {
      decoder.close();
    }
    const finishReason = stream.finishReason ?? 'length';
    const r = stream.result;
    const usage: Usage = {
      promptTokens: prompt.length,
      completionTokens: generated,
      totalTokens: prompt.length + generated,
      cachedPromptTokens: decoder.cachedTokens ?? 0,
      reasoningTokens: stream.reasoningTokens,
    };
    const t = timings(t0, tFirst, now(), prompt.length, generated);
    yield { type: 'done', finishReason, usage, timings: t };
    return {
      ...r,
      finishReason,
      usage,
      timings: t,
      tokens,
      ...(logprobs && { logprobs }),
      message: {
        role: 'assistant',
        content: r.text || null,
        reasoning: r.reasoning || null,
        ...(r.toolCalls.length && {
          toolCalls: r.toolCalls.map((c) => ({ id: c.id, name: c.name, arguments: c.rawArguments })),
        }),
      },
    };
  });
}

export function complete(
  backend: GenerationBackend,
  prompt: string | ArrayLike<number>,
  options: CompleteOptions = {},
): Generation<CompletionEvent, CompletionResult> {
  checkKeys(options, [...generateKeys, 'stopTokens'], 'complete');
  const promptText = typeof prompt === 'string' ? prompt : undefined;
  const promptIds = typeof prompt === 'string' ? undefined : Array.from(prompt);
  const stopTokens = new Set(options.stopTokens ?? [TOKENS.return, TOKENS.call]);
  const stops = options.stop === undefined ? [] : Array.isArray(options.stop) ? options.stop : [options.stop];
  const signal = options.signal;
  return new Generation(async function* () {
    // A raw prompt is the caller's own formatting: Harmony's special tokens in it are recognised.
    // A large one is encoded off the event loop.
    const tokens = promptIds ?? (await getTokenizer().encodeAsync(promptText!, { allowedSpecial: 'all' }));
    if (signal?.aborted) throw new AbortedError('generation was aborted', { cause: signal.reason });
    const { decoder: source, maxTokens } = prepare(backend, tokens, options, stopTokens);
    const decoder = getTokenizer().streamDecoder();
    const stop = new StopMatcher(stops);
    const out: number[] = [];
    const logprobs: TokenLogprob[] | undefined = options.logprobs !== undefined ? [] : undefined;
    let text = '';
    let finishReason: 'stop' | 'length' = 'length';
    let cut = false;
    const t0 = now();
    let tFirst = t0;
    try {
      let step = await source.next();
      tFirst = now();
      for (;;) {
        const token = step.token;
        out.push(token);
        if (stopTokens.has(token)) {
          finishReason = 'stop';
          break;
        }
        const s = stop.push(decoder.push(token));
        text += s.emit;
        const lp = logprobs ? toTokenLogprob(step) : undefined;
        if (lp) logprobs!.push(lp);
        yield { type: 'token', token, text: s.emit, logprob: step.logprob, ...(lp && { logprobs: lp }) };
        if (s.stopped) {
          finishReason = 'stop';
          cut = true;
          break;
        }
        if (out.length >= maxTokens) break;
        if (signal?.aborted) throw new AbortedError('generation was aborted', { cause: signal.reason });
        step = await source.next();
      }
      // Text still held: an unfinished UTF-8 character, or a possible start of a stop string.
      if (!cut) {
        const tail = stop.push(decoder.flush()).emit + stop.flush();
        if (tail) {
          text += tail;
          yield { type: 'text', text: tail };
        }
      }
    } finally {
      source.close();
    }
    const usage: Usage = {
      promptTokens: tokens.length,
      completionTokens: out.length,
      totalTokens: tokens.length + out.length,
      cachedPromptTokens: source.cachedTokens ?? 0,
    };
    const t = timings(t0, tFirst, now(), tokens.length, out.length);
    yield { type: 'done', finishReason, usage, timings: t };
    return { tokens: out, text, finishReason, usage, timings: t, ...(logprobs && { logprobs }) };
  });
}
