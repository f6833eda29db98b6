// Structured output: the answer (Harmony's final channel) and strict tools' arguments must be
// JSON valid under a schema. Reasoning stays free. With a response format the turn's structure is
// held too: headers are only those Harmony defines, free text cannot end the turn, and after its
// reasoning the model must answer (or call a tool), so every finished turn carries the document.
import { createRequire } from 'node:module';

import { InvalidArgumentError, UnsupportedError } from './errors.js';
import { GRAMMAR_VOCAB, JsonMatcher, maskOf, textMaskPlus } from './grammar.js';
import type { JsonSchema } from './harmony/types.js';
import type { TokenConstraint } from './sampler.js';
import { getTokenizer, TOKENS } from './tokenizer.js';

export interface JsonSchemaFormat {
  type: 'json_schema';
  /** Shown to the model under `# Response Formats` (default `response`). */
  name?: string;
  description?: string;
  schema: JsonSchema;
  /** Accepted for OpenAI compatibility; the schema is always enforced. */
  strict?: boolean | null;
}

/** `text`: free. `json_object`: any JSON object. `json_schema`: valid under the schema. */
export type ResponseFormat = { type: 'text' } | { type: 'json_object' } | JsonSchemaFormat;

// What the grammar enforces (OpenAI's structured-output subset and a little more) and what only
// annotates. Anything else would be silently ignored by the grammar, so it is refused instead.
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$comment', '$schema', '$id', 'deprecated', 'readOnly', 'writeOnly']);
const ENFORCED = new Set([
  'type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'items', 'prefixItems', 'minItems', 'maxItems',
  'minLength', 'maxLength', 'pattern', 'format', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'anyOf', 'allOf', '$ref', '$defs', 'definitions',
]);
const FORMATS = new Set(['date', 'time', 'date-time', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uuid', 'uri']);
const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);

// Regular-expression features the grammar compiler lacks (it would fail, or ignore an anchor).
const REGEX_UNSUPPORTED: [RegExp, string][] = [
  [/\(\?[=!]/, 'lookahead'],
  [/\(\?<[=!]/, 'lookbehind'],
  [/\\[1-9]|\\k</, 'backreferences'],
  [/\\[bB]/, 'word boundaries'],
  [/\\[pP]\{/, 'Unicode property classes'],
  [/\(\?[a-zA-Z-]+[:)]/, 'group flags'],
];

function checkPattern(v: unknown, where: string): void {
  if (typeof v !== 'string') throw new InvalidArgumentError(`${where} must be a string`);
  try {
    new RegExp(v, 'u');
  } catch (e) {
    throw new InvalidArgumentError(`${where} is not a regular expression: ${(e as Error).message}`);
  }
  for (const [re, what] of REGEX_UNSUPPORTED) if (re.test(v)) throw new UnsupportedError(`${where}: ${what} in a pattern are not supported`);
  // Anchors only at the ends (escaped ones and ones inside a class are text).
  const bare = v.replace(/\\./g, '__').replace(/\[[^\]]*\]/g, '_');
  if (bare.slice(1).includes('^') || bare.slice(0, -1).includes('$')) throw new UnsupportedError(`${where}: "^" and "$" are supported only at the pattern's start and end`);
}

/** Refuses a schema the grammar cannot enforce exactly, naming the keyword and where it is. */
export function checkSchema(schema: unknown, where: string): asserts schema is JsonSchema {
  const walk = (s: unknown, at: string): void => {
    if (s === true) return;
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new InvalidArgumentError(`${where}: the schema at ${at} must be an object`);
    const o = s as Record<string, unknown>;
    for (const [k, v] of Object.entries(o)) {
      if (ANNOTATIONS.has(k)) continue;
      if (!ENFORCED.has(k)) throw new UnsupportedError(`${where}: JSON Schema keyword "${k}" (at ${at}) is not supported in structured output`);
      const sub = `${at}/${k}`;
      switch (k) {
        case 'type':
          for (const t of Array.isArray(v) ? v : [v])
            if (!TYPES.has(t as string)) throw new InvalidArgumentError(`${where}: ${sub} must name JSON types, got ${JSON.stringify(t)}`);
          break;
        case 'format':
          if (!FORMATS.has(v as string)) throw new UnsupportedError(`${where}: format ${JSON.stringify(v)} (at ${at}) is not supported; supported: ${[...FORMATS].join(', ')}`);
          break;
        case 'pattern':
          checkPattern(v, `${where}: ${sub}`);
          for (const other of ['minLength', 'maxLength', 'format'])
            if (other in o) throw new UnsupportedError(`${where}: "pattern" together with "${other}" (at ${at}) is not supported; fold the length into the pattern, e.g. {1,8}`);
          break;
        case '$ref':
          if (typeof v !== 'string' || !/^#\/(\$defs|definitions)\/[^/]+$/.test(v))
            throw new UnsupportedError(`${where}: ${sub} must point into this schema's $defs or definitions, got ${JSON.stringify(v)}`);
          break;
        case 'properties':
        case '$defs':
        case 'definitions':
          if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidArgumentError(`${where}: ${sub} must be an object`);
          for (const [name, p] of Object.entries(v)) walk(p, `${sub}/${name}`);
          break;
        case 'additionalProperties':
          if (v !== false) walk(v, sub);
          break;
        case 'items':
          if (v !== false) walk(v, sub);
          break;
        case 'prefixItems':
        case 'anyOf':
        case 'allOf':
          if (!Array.isArray(v) || v.length === 0) throw new InvalidArgumentError(`${where}: ${sub} must be a non-empty array of schemas`);
          if (k === 'allOf' && v.length > 1) throw new UnsupportedError(`${where}: allOf with more than one schema (at ${at}) is not supported`);
          v.forEach((p, i) => walk(p, `${sub}/${i}`));
          break;
      }
    }
  };
  walk(schema, '#');
  // Whatever the walk let through must also be a valid schema (checked as draft 2020-12 whatever
  // $schema says: the keywords allowed above mean the same in drafts 7 to 2020-12).
  const { $schema: _, ...rest } = schema as Record<string, unknown>;
  let valid: unknown;
  try {
    valid = ajv().validateSchema(rest);
  } catch (e) {
    throw new InvalidArgumentError(`${where}: not a valid JSON Schema: ${(e as Error).message}`);
  }
  if (!valid) throw new InvalidArgumentError(`${where}: not a valid JSON Schema: ${ajv().errorsText(ajv().errors)}`);
}

type Ajv = { validateSchema(s: object): boolean | Promise<unknown>; errors?: unknown; errorsText(e?: unknown): string };
let ajvInstance: Ajv | undefined;
function ajv(): Ajv {
  if (!ajvInstance) {
    const Ajv2020 = createRequire(import.meta.url)('ajv/dist/2020') as { default: new (o: object) => Ajv };
    ajvInstance = new Ajv2020.default({ strict: false, validateFormats: false });
  }
  return ajvInstance;
}

/** The schema a response format enforces (undefined for text). */
export function formatSchema(format: ResponseFormat | undefined, where: string): JsonSchema | undefined {
  if (format === undefined || format === null) return undefined;
  if (typeof format !== 'object') throw new InvalidArgumentError(`${where} must be an object`);
  switch (format.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return { type: 'object' };
    case 'json_schema':
      if (format.name !== undefined && (typeof format.name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(format.name)))
        throw new InvalidArgumentError(`${where}.name must be 1-64 letters, digits, '_' or '-'`);
      checkSchema(format.schema, `${where}.schema`);
      return format.schema;
    default:
      throw new InvalidArgumentError(`${where}.type must be 'text', 'json_object' or 'json_schema', got ${JSON.stringify((format as { type?: unknown }).type)}`);
  }
}

/** The developer message's `# Response Formats` section (the Harmony guide's layout). */
export function responseFormatSection(format: ResponseFormat | undefined): string | undefined {
  if (format?.type !== 'json_schema') return undefined;
  const lines = ['# Response Formats', '', `## ${format.name ?? 'response'}`, ''];
  if (format.description) lines.push(...format.description.split('\n').map((l) => `// ${l}`));
  lines.push(JSON.stringify(format.schema));
  return lines.join('\n');
}

type Body = { kind: 'free'; mask: Int32Array | null } | { kind: 'json'; matcher: JsonMatcher };

/** A trie of token sequences: the headers the model may write. */
interface Trie {
  next: Map<number, Trie>;
  /** Complete header: what its body is. */
  body?: 'reasoning' | 'final' | { tool: string };
}

function addPath(t: Trie, tokens: number[], body: Trie['body']): void {
  let n = t;
  for (const id of tokens) {
    let c = n.next.get(id);
    if (!c) n.next.set(id, (c = { next: new Map() }));
    n = c;
  }
  n.body = body;
}

export interface ConstraintSpec {
  /** Hold the turn's structure (headers, where it may end), not only JSON bodies. */
  enforced: boolean;
  /** The final answer's schema (free text if absent). */
  final?: JsonSchema;
  /** Whether the turn may end with an answer rather than a call (tool_choice 'required': no). */
  answer: boolean;
  /** Strict tools' argument schemas by name. */
  tools: Map<string, JsonSchema>;
  /** The tools the model may call where the structure is enforced. */
  callable: string[];
}

/**
 * Follows the assistant turn token by token (it starts right after `<|start|>assistant`) and
 * gives the mask for the next token: a header trie where the structure is enforced, xgrammar's
 * mask inside a constrained JSON body, free text elsewhere.
 */
export class HarmonyConstraint implements TokenConstraint {
  readonly #spec: ConstraintSpec;
  readonly #first: Trie;
  readonly #later: Trie;
  readonly #reasoningMask = textMaskPlus([TOKENS.end]);
  readonly #answerMask = textMaskPlus([TOKENS.return]);
  readonly #argsMask = textMaskPlus([TOKENS.call]);
  #node: Trie | undefined; // enforced header in progress
  #header: number[] | undefined; // free header in progress
  #body: Body | undefined;
  #pending: number | undefined; // a token accepted but not yet applied (applied in prepare)
  #done = false;
  #error: unknown;
  mask: Int32Array | null = null;

  constructor(spec: ConstraintSpec) {
    this.#spec = spec;
    const tok = getTokenizer();
    const enc = (s: string) => tok.encode(s);
    const final = [TOKENS.channel, ...enc('final'), TOKENS.message];
    const tools = spec.callable.map((n) => ({
      tokens: [TOKENS.channel, ...enc(`commentary to=functions.${n} `), TOKENS.constrain, ...enc('json'), TOKENS.message],
      name: n,
    }));
    // First message: reasoning, the answer or a call; after reasoning: the answer or a call.
    this.#first = { next: new Map() };
    this.#later = { next: new Map() };
    addPath(this.#first, [TOKENS.channel, ...enc('analysis'), TOKENS.message], 'reasoning');
    const prefix = [TOKENS.start, ...enc('assistant')];
    for (const [t, pre] of [[this.#first, []], [this.#later, prefix]] as const) {
      if (spec.answer) addPath(t, [...pre, ...final], 'final');
      for (const c of tools) addPath(t, [...pre, ...c.tokens], { tool: c.name });
    }
    if (spec.enforced) this.#node = this.#first;
    else this.#header = [];
  }

  get enforced(): boolean {
    return this.#spec.enforced;
  }

  async prepare(): Promise<void> {
    if (this.#error) throw this.#error;
    if (this.#pending !== undefined) {
      const t = this.#pending;
      this.#pending = undefined;
      await this.#advance(t);
    }
    this.mask = await this.#maskNow();
  }

  accept(token: number): void {
    // Applied at the next prepare(): creating a matcher is asynchronous.
    if (this.#pending !== undefined) this.#error ??= new InvalidArgumentError('constraint: a token was accepted without prepare()');
    this.#pending = token;
  }

  async #maskNow(): Promise<Int32Array | null> {
    if (this.#done) return null;
    if (this.#node) return maskOf(this.#node.next.keys());
    if (this.#body?.kind === 'json') return this.#body.matcher.mask();
    if (this.#body?.kind === 'free') return this.#body.mask;
    return null;
  }

  async #advance(t: number): Promise<void> {
    if (this.#done) return;
    if (this.#node) {
      const n = this.#node.next.get(t);
      if (!n) throw new InvalidArgumentError(`constraint: token ${t} is not part of an allowed header`);
      this.#node = n;
      if (n.next.size === 0) {
        this.#node = undefined;
        await this.#open(n.body!);
      }
      return;
    }
    if (this.#header) {
      // Free header: read it once complete, to see where the message goes.
      if (t !== TOKENS.message) {
        this.#header.push(t);
        return;
      }
      const text = getTokenizer().decode(this.#header);
      this.#header = undefined;
      const to = /to=functions\.([A-Za-z0-9_.-]+)/.exec(text)?.[1];
      await this.#open(to !== undefined ? { tool: to } : /<\|channel\|>final\b/.test(text) ? 'final' : 'reasoning');
      return;
    }
    const body = this.#body;
    if (body?.kind === 'json') {
      body.matcher.accept(t);
      if (body.matcher.terminated) this.#finish();
      return;
    }
    if (t === TOKENS.end) {
      this.#body = undefined;
      if (this.enforced) this.#node = this.#later;
      else this.#header = [];
    } else if (t === TOKENS.return || t === TOKENS.call) this.#finish();
  }

  async #open(kind: NonNullable<Trie['body']>): Promise<void> {
    const schema = kind === 'final' ? this.#spec.final : kind === 'reasoning' ? undefined : this.#spec.tools.get(kind.tool);
    if (schema) {
      this.#body = { kind: 'json', matcher: await JsonMatcher.create(schema, kind === 'final' ? TOKENS.return : TOKENS.call) };
      return;
    }
    // Free text: where the structure is enforced, reasoning may only end its message, an answer
    // or a call the turn.
    const mask = kind === 'reasoning' ? this.#reasoningMask : kind === 'final' ? this.#answerMask : this.#argsMask;
    this.#body = { kind: 'free', mask: this.enforced ? mask : null };
  }

  #finish(): void {
    this.#done = true;
    if (this.#body?.kind === 'json') this.#body.matcher.dispose();
    this.#body = undefined;
  }

  dispose(): void {
    this.#finish();
  }
}

/** OpenAI's tool_choice: call whichever (or nothing), never, at least one, or this one. */
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string };

/** A constraint for a chat turn, or undefined when nothing is constrained. */
export function chatConstraint(final: JsonSchema | undefined, strictTools: Map<string, JsonSchema>, toolNames: string[], choice: ToolChoice, vocabSize: number): HarmonyConstraint | undefined {
  const forced = choice === 'required' || typeof choice === 'object';
  const enforced = final !== undefined || forced || (choice === 'none' && toolNames.length > 0);
  if (!enforced && strictTools.size === 0) return undefined;
  if (vocabSize !== GRAMMAR_VOCAB)
    throw new UnsupportedError(`constrained decoding needs the o200k_harmony vocabulary (${GRAMMAR_VOCAB} rows); this model has ${vocabSize}`);
  const callable = choice === 'none' ? [] : typeof choice === 'object' ? [choice.name] : toolNames;
  return new HarmonyConstraint({ enforced, final, answer: !forced, tools: strictTools, callable });
}

/** Checks a tool_choice against the request's tools. */
export function checkToolChoice(choice: unknown, toolNames: string[], where: string): ToolChoice {
  if (choice === undefined || choice === null) return 'auto';
  if (choice === 'auto' || choice === 'none') return choice;
  if (choice === 'required' || (typeof choice === 'object' && typeof (choice as { name?: unknown }).name === 'string')) {
    if (toolNames.length === 0) throw new InvalidArgumentError(`${where}: a tool must be called but the request has no tools`);
    if (typeof choice === 'object' && !toolNames.includes((choice as { name: string }).name))
      throw new InvalidArgumentError(`${where}: unknown tool ${JSON.stringify((choice as { name: string }).name)}; the request's tools are ${toolNames.join(', ')}`);
    return choice as ToolChoice;
  }
  throw new InvalidArgumentError(`${where} must be 'auto', 'none', 'required' or {name}, got ${JSON.stringify(choice)}`);
}
