// Pieces every OpenAI-style route shares: the error shape and status mapping, JSON body reading,
// and the sampling fields of a request.
import { z } from 'zod';

import { AbortedError, ContextOverflowError, DisposedError, GptOssError, OverloadedError } from '../errors.js';
import type { CompleteOptions } from '../chat/generate.js';
import type { JsonSchema } from '../chat/harmony/types.js';
import { checkSchema, type ResponseFormat, type ToolChoice } from '../chat/structured.js';

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export function errorBody(e: HttpError) {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

/** Maps anything thrown while serving to the status and body a client expects. */
export function toHttp(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof z.ZodError) {
    const issue = e.issues[0];
    const path = issue?.path.join('.') || null;
    return new HttpError(
      400,
      'invalid_request_error',
      `${path ? `${path}: ` : ''}${issue?.message ?? 'invalid request'}`,
      path,
      'invalid_value',
    );
  }
  if (e instanceof OverloadedError) return new HttpError(429, 'rate_limit_error', e.message, null, 'overloaded');
  if (e instanceof DisposedError) return new HttpError(503, 'server_error', e.message, null, 'unavailable');
  // Aborted by the server for a reason of its own (a deadline): that reason is the answer.
  if (e instanceof AbortedError && e.cause instanceof HttpError) return e.cause;
  // The client went away (or aborted): nobody reads this; 499 keeps it out of the 5xx counts.
  if (e instanceof AbortedError || (e instanceof Error && e.name === 'AbortError'))
    return new HttpError(499, 'invalid_request_error', 'the request was aborted', null, 'aborted');
  if (e instanceof ContextOverflowError)
    return new HttpError(400, 'invalid_request_error', e.message, 'messages', 'context_length_exceeded');
  if (e instanceof GptOssError && (e.code === 'ERR_INVALID_ARGUMENT' || e.code === 'ERR_UNSUPPORTED'))
    return new HttpError(
      400,
      'invalid_request_error',
      e.message,
      null,
      e.code === 'ERR_UNSUPPORTED' ? 'unsupported' : 'invalid_value',
    );
  return new HttpError(500, 'server_error', e instanceof Error ? e.message : String(e));
}

/** Most content parts one message may have. */
export const MAX_CONTENT_PARTS = 1000;
export const contentParts = z
  .array(z.object({ type: z.literal('text'), text: z.string() }).passthrough())
  .max(MAX_CONTENT_PARTS);
export const content = z.union([z.string(), contentParts]).nullable().optional();
export const partsText = (c: z.infer<typeof content>) =>
  c == null ? '' : typeof c === 'string' ? c : c.map((p) => p.text).join('');

/** Token ids one request may bias (OpenAI's limit). */
export const MAX_LOGIT_BIAS = 300;
/** Messages (or input items) one request may hold. */
export const MAX_MESSAGES = 10_000;
/** Token ids a raw prompt may have: gpt-oss's longest context (an engine refuses past its own). */
export const MAX_PROMPT_IDS = 131_072;
/** Tools one request may declare (OpenAI's limit). */
export { MAX_TOOLS } from '../chat/generate.js';

export const sampling = {
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_k: z.number().int().min(0).nullable().optional(),
  min_p: z.number().min(0).max(1).nullable().optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  repetition_penalty: z.number().gt(0).nullable().optional(),
  logit_bias: z
    .unknown()
    // Counted before the entries are validated: 300,000 of them took 0.8 s to validate.
    .superRefine((v, ctx) => {
      if (typeof v === 'object' && v !== null && Object.keys(v).length > MAX_LOGIT_BIAS)
        ctx.addIssue({ code: 'custom', message: `at most ${MAX_LOGIT_BIAS} token ids may be biased` });
    })
    .pipe(z.record(z.string(), z.number().min(-100).max(100)).nullable())
    .optional(),
  seed: z.number().int().nullable().optional(),
  stop: z
    .union([z.string(), z.array(z.string()).max(4)])
    .nullable()
    .optional(),
  n: z.number().int().min(1).max(8).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullable().optional(),
  user: z.string().optional(),
  // vLLM's: only requests with the same salt share prefix-cache pages.
  cache_salt: z.string().max(1024).nullable().optional(),
};

export function samplingOptions(b: { [K in keyof typeof sampling]?: z.infer<(typeof sampling)[K]> }): CompleteOptions {
  const o: CompleteOptions = {};
  if (b.temperature != null) o.temperature = b.temperature;
  if (b.top_p != null) o.topP = b.top_p;
  if (b.top_k != null) o.topK = b.top_k;
  if (b.min_p != null) o.minP = b.min_p;
  if (b.presence_penalty != null) o.presencePenalty = b.presence_penalty;
  if (b.frequency_penalty != null) o.frequencyPenalty = b.frequency_penalty;
  if (b.repetition_penalty != null) o.repetitionPenalty = b.repetition_penalty;
  if (b.logit_bias != null)
    o.logitBias = Object.fromEntries(Object.entries(b.logit_bias).map(([k, v]) => [Number(k), v]));
  if (b.seed != null) o.seed = b.seed;
  if (b.stop != null) o.stop = b.stop;
  return o;
}

/** Whether a stream's failure is its client leaving (nobody to tell), not the server's deadline
 * or any other error (which the stream reports as its last event). */
export function clientLeft(client: AbortSignal, e: unknown): boolean {
  return client.aborted || (e instanceof AbortedError && !(e.cause instanceof HttpError));
}

/**
 * The request body as JSON, or a 400 saying it is not. Its text is scanned before it is parsed:
 * a body nested deeper than any request needs (whatever reads it later may recurse over it:
 * schemas, tool parameters) or holding more values than any request needs (parsing and
 * validating 130,000 small messages took the event loop for most of a second) is refused unparsed.
 */
export async function readJson(c: { req: { text: () => Promise<string> } }): Promise<unknown> {
  const text = await c.req.text();
  const over = scanJson(text, MAX_JSON_DEPTH, MAX_JSON_VALUES);
  if (over === 'depth')
    throw new HttpError(
      400,
      'invalid_request_error',
      `the request body nests arrays and objects more than ${MAX_JSON_DEPTH} deep`,
      null,
      'invalid_value',
    );
  if (over === 'values')
    throw new HttpError(
      413,
      'invalid_request_error',
      `the request body holds more than ${MAX_JSON_VALUES} JSON values (array elements and object members); no request needs that many`,
      null,
      'request_too_large',
    );
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'invalid_request_error', 'the request body is not valid JSON', null, 'invalid_json');
  }
}

const MAX_JSON_DEPTH = 128;
/** Room for a raw prompt of 131,072 token ids (gpt-oss's longest context) and the rest. */
export const MAX_JSON_VALUES = 150_000;

/**
 * Whether JSON text nests arrays and objects deeper than `maxDepth`, or holds more than
 * `maxValues` values (each comma outside strings separates two, each array or object is one):
 * one pass over the text, strings skipped by indexOf, stopping at the first limit passed. Text
 * that is not JSON may pass; the parser refuses it then.
 */
function scanJson(text: string, maxDepth: number, maxValues: number): 'depth' | 'values' | undefined {
  let depth = 0,
    values = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22) {
      // To the closing quote: one not escaped, i.e. after an even run of backslashes.
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i < 0) return undefined;
        let b = i - 1;
        while (text.charCodeAt(b) === 0x5c) b--;
        if ((i - 1 - b) % 2 === 0) break;
      }
    } else if (ch === 0x7b || ch === 0x5b) {
      if (++depth > maxDepth) return 'depth';
      if (++values > maxValues) return 'values';
    } else if (ch === 0x7d || ch === 0x5d) depth--;
    else if (ch === 0x2c && ++values > maxValues) return 'values';
  }
  return undefined;
}

/** gpt-oss has low / medium / high; the OpenAI SDK also sends none, minimal, xhigh and max. */
export const effort = z
  .enum(['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max'])
  .transform((e): 'low' | 'medium' | 'high' =>
    e === 'none' || e === 'minimal' ? 'low' : e === 'xhigh' || e === 'max' ? 'high' : e,
  );

/** A JSON Schema response format's body: `json_schema` on chat completions, `text.format` on responses. */
export const jsonSchemaFormat = z
  .object({
    name: z.string(),
    description: z.string().nullable().optional(),
    schema: z.record(z.string(), z.unknown()).nullable().optional(),
    strict: z.boolean().nullable().optional(),
  })
  .passthrough();

/** The engine's response format for a request's, its schema checked (errors name `where`). */
export function responseFormatOf(
  f: ({ type: string } & Partial<z.infer<typeof jsonSchemaFormat>>) | null | undefined,
  where: string,
): ResponseFormat | undefined {
  if (!f || f.type === 'text') return undefined;
  if (f.type === 'json_object' || !f.schema) return { type: 'json_object' };
  checkSchema(f.schema, `${where}.schema`);
  return {
    type: 'json_schema',
    name: f.name,
    ...(f.description && { description: f.description }),
    schema: f.schema as JsonSchema,
    strict: f.strict ?? null,
  };
}

/** OpenAI's tool_choice in either API's spelling. */
export function toolChoiceOf(
  c: string | { name?: string; function?: { name: string } } | null | undefined,
): ToolChoice | undefined {
  if (c == null) return undefined;
  if (typeof c === 'string') return c as ToolChoice;
  return { name: c.function?.name ?? c.name ?? '' };
}
