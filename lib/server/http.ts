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

export const contentParts = z.array(z.object({ type: z.literal('text'), text: z.string() }).passthrough());
export const content = z.union([z.string(), contentParts]).nullable().optional();
export const partsText = (c: z.infer<typeof content>) =>
  c == null ? '' : typeof c === 'string' ? c : c.map((p) => p.text).join('');

export const sampling = {
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_k: z.number().int().min(0).nullable().optional(),
  min_p: z.number().min(0).max(1).nullable().optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  repetition_penalty: z.number().gt(0).nullable().optional(),
  logit_bias: z.record(z.string(), z.number().min(-100).max(100)).nullable().optional(),
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

/** The request body as JSON, or a 400 saying it is not. */
export async function readJson(c: { req: { json: () => Promise<unknown> } }): Promise<unknown> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new HttpError(400, 'invalid_request_error', 'the request body is not valid JSON', null, 'invalid_json');
  }
  // Whatever reads the body later may recurse over it (schemas, tool parameters): a body nested
  // deeper than any request needs is refused here, before anything can overflow the stack on it.
  if (nestedBeyond(body, MAX_JSON_DEPTH))
    throw new HttpError(
      400,
      'invalid_request_error',
      `the request body nests arrays and objects more than ${MAX_JSON_DEPTH} deep`,
      null,
      'invalid_value',
    );
  return body;
}

const MAX_JSON_DEPTH = 128;

/** Whether a parsed JSON value nests deeper than `max` (iteratively: it may be very deep). */
function nestedBeyond(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (typeof x !== 'object' || x === null) continue;
    if (d >= max) return true;
    for (const y of Array.isArray(x) ? x : Object.values(x))
      if (typeof y === 'object' && y !== null) stack.push([y, d + 1]);
  }
  return false;
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
