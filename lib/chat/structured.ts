// Structured output: the answer (Harmony's final channel) and strict tools' arguments must be
// JSON valid under a schema. Reasoning stays free. With a response format the turn's structure is
// held too: headers are only those Harmony defines, free text cannot end the turn, and after its
// reasoning the model must answer (or call a tool), so every finished turn carries the document.
import { createRequire } from 'node:module';

import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { compileJsonSchema, JsonMatcher, maskOf, textMaskPlus } from './grammar.js';
import { GRAMMAR_VOCAB } from './grammar-protocol.js';
import type { JsonSchema } from './harmony/types.js';
import type { TokenConstraint } from '../engine/sampler.js';
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
const ANNOTATIONS = new Set([
  'title',
  'description',
  'default',
  'examples',
  '$comment',
  '$schema',
  '$id',
  'deprecated',
  'readOnly',
  'writeOnly',
]);
const ENFORCED = new Set([
  'type',
  'enum',
  'const',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'pattern',
  'format',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'anyOf',
  'allOf',
  '$ref',
  '$defs',
  'definitions',
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
  for (const [re, what] of REGEX_UNSUPPORTED)
    if (re.test(v)) throw new UnsupportedError(`${where}: ${what} in a pattern are not supported`);
  // Anchors only at the ends (escaped ones and ones inside a class are text).
  const bare = v.replace(/\\./g, '__').replace(/\[[^\]]*\]/g, '_');
  if (bare.slice(1).includes('^') || bare.slice(0, -1).includes('$'))
    throw new UnsupportedError(`${where}: "^" and "$" are supported only at the pattern's start and end`);
}

/**
 * What the grammar compiler can be asked to build. Past these it faults (nesting), takes seconds
 * to minutes (each unit of a string length bound is a pass over the whole vocabulary: about 40 ms
 * here), or its memory grows by gigabytes; a vetting compile within a time budget
 * (lib/chat/grammar.ts) catches what these bounds let through.
 */
export const SCHEMA_LIMITS = {
  /** Schemas nested inside one another. */
  depth: 32,
  /** Schemas in all. */
  nodes: 5000,
  /** The schema as JSON text. */
  chars: 256 * 1024,
  /** Values of one enum. */
  enumValues: 1000,
  /** One string's minLength or maxLength. */
  stringLength: 64,
  /** minLength and maxLength summed over the schema. */
  stringLengthTotal: 256,
  /** minItems, maxItems. */
  items: 1000,
  /** |minimum|, |maximum| (2^53: integers stay exact). */
  magnitude: 2 ** 53,
  /** Subschemas of one request's schemas together: its response format and every strict tool. */
  requestNodes: 10_000,
} as const;

/** What one request's schemas may cost together (SCHEMA_LIMITS.requestNodes): pass the same
 * budget to checkSchema for each of them. */
export class SchemaBudget {
  used = 0;
  constructor(readonly max: number = SCHEMA_LIMITS.requestNodes) {}

  /** Counts `nodes` more subschemas, or refuses them naming the budget. */
  charge(nodes: number, where: string): void {
    if (this.used + nodes > this.max)
      throw new UnsupportedError(
        `${where}: the request's schemas (response format and strict tools together) hold more than ${this.max} subschemas; at most ${this.max} are supported`,
      );
    this.used += nodes;
  }
}

// Schemas checked already, with their text then and their size: a request's schema is checked by
// the server and again by chat(), and by each of n answers, and a check costs milliseconds per
// thousand subschemas. The text (compared each time) notices a schema changed since.
const checked = new WeakMap<object, { text: string; nodes: number }>();

function textOf(schema: unknown): string | undefined {
  try {
    return JSON.stringify(schema);
  } catch {
    return undefined; // too deep to stringify (changed since it was checked): checked afresh
  }
}

/** Refuses a schema the grammar cannot enforce exactly, naming the keyword and where it is. Its
 * subschemas are counted against `budget` (one request's schemas together), if given. */
export function checkSchema(schema: unknown, where: string, budget?: SchemaBudget): asserts schema is JsonSchema {
  const L = SCHEMA_LIMITS;
  const seen = typeof schema === 'object' && schema !== null ? checked.get(schema) : undefined;
  if (seen && textOf(schema) === seen.text) {
    budget?.charge(seen.nodes, where);
    return;
  }
  let nodes = 0;
  let lengths = 0;
  const walk = (s: unknown, at: string, depth = 0): void => {
    if (s === true) return;
    if (typeof s !== 'object' || s === null || Array.isArray(s))
      throw new InvalidArgumentError(`${where}: the schema at ${at} must be an object`);
    if (depth > L.depth)
      throw new UnsupportedError(`${where}: schemas nested more than ${L.depth} deep (at ${at}) are not supported`);
    if (++nodes > L.nodes)
      throw new UnsupportedError(`${where}: schemas of more than ${L.nodes} subschemas are not supported`);
    if (budget && budget.used + nodes > budget.max) budget.charge(nodes, where);
    const o = s as Record<string, unknown>;
    lengths += checkBounds(o, `${where}: ${at}`);
    if (lengths > L.stringLengthTotal)
      throw new UnsupportedError(
        `${where}: string length bounds summing to more than ${L.stringLengthTotal} (at ${at}) are not supported: each costs the grammar compiler a pass over the vocabulary`,
      );
    for (const [k, v] of Object.entries(o)) {
      if (ANNOTATIONS.has(k)) continue;
      if (!ENFORCED.has(k))
        throw new UnsupportedError(
          `${where}: JSON Schema keyword "${k}" (at ${at}) is not supported in structured output`,
        );
      const sub = `${at}/${k}`;
      switch (k) {
        case 'type':
          if (Array.isArray(v) && v.length === 0)
            throw new InvalidArgumentError(`${where}: ${sub} must name at least one JSON type`);
          for (const t of Array.isArray(v) ? v : [v])
            if (!TYPES.has(t as string))
              throw new InvalidArgumentError(`${where}: ${sub} must name JSON types, got ${JSON.stringify(t)}`);
          break;
        case 'format':
          if (!FORMATS.has(v as string))
            throw new UnsupportedError(
              `${where}: format ${JSON.stringify(v)} (at ${at}) is not supported; supported: ${[...FORMATS].join(', ')}`,
            );
          break;
        case 'pattern':
          checkPattern(v, `${where}: ${sub}`);
          for (const other of ['minLength', 'maxLength', 'format'])
            if (other in o)
              throw new UnsupportedError(
                `${where}: "pattern" together with "${other}" (at ${at}) is not supported; fold the length into the pattern, e.g. {1,8}`,
              );
          break;
        case '$ref':
          if (typeof v !== 'string' || !/^#\/(\$defs|definitions)\/[^/]+$/.test(v))
            throw new UnsupportedError(
              `${where}: ${sub} must point into this schema's $defs or definitions, got ${JSON.stringify(v)}`,
            );
          break;
        case 'properties':
        case '$defs':
        case 'definitions':
          if (typeof v !== 'object' || v === null || Array.isArray(v))
            throw new InvalidArgumentError(`${where}: ${sub} must be an object`);
          for (const [name, p] of Object.entries(v)) walk(p, `${sub}/${name}`, depth + 1);
          break;
        case 'additionalProperties':
        case 'items':
          if (v !== false) walk(v, sub, depth + 1);
          break;
        case 'prefixItems':
        case 'anyOf':
        case 'allOf':
          if (!Array.isArray(v) || v.length === 0)
            throw new InvalidArgumentError(`${where}: ${sub} must be a non-empty array of schemas`);
          if (k === 'allOf' && v.length > 1)
            throw new UnsupportedError(`${where}: allOf with more than one schema (at ${at}) is not supported`);
          v.forEach((p, i) => walk(p, `${sub}/${i}`, depth + 1));
          break;
      }
    }
  };
  walk(schema, '#'); // first: it bounds the depth that JSON.stringify recurses into
  const text = JSON.stringify(schema);
  if (text.length > L.chars)
    throw new UnsupportedError(`${where}: schemas longer than ${L.chars} characters as JSON are not supported`);
  if (!admitsDocument(schema as JsonSchema, where))
    throw new UnsupportedError(
      `${where}: the schema admits no finite document (every way through it comes back to a $ref it is inside)`,
    );
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
  budget?.charge(nodes, where);
  if (typeof schema === 'object' && schema !== null) checked.set(schema, { text, nodes });
}

/** Numbers, lengths and counts of one schema: in range and not contradicting each other. Returns
 * the string length bounds it sets (their cost to the compiler). */
function checkBounds(o: Record<string, unknown>, at: string): number {
  const L = SCHEMA_LIMITS;
  const int = (k: string, max: number): number | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      throw new InvalidArgumentError(`${at}/${k} must be a non-negative integer, got ${JSON.stringify(v)}`);
    if (v > max) throw new UnsupportedError(`${at}/${k} ${v} is over the ${max} the grammar compiler supports`);
    return v;
  };
  const num = (k: string): number | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new InvalidArgumentError(`${at}/${k} must be a finite number, got ${JSON.stringify(v)}`);
    if (Math.abs(v) > L.magnitude)
      throw new UnsupportedError(`${at}/${k} ${v} is beyond the ±2^53 the grammar compiler supports`);
    return v;
  };
  const minLength = int('minLength', L.stringLength),
    maxLength = int('maxLength', L.stringLength);
  if (minLength !== undefined && maxLength !== undefined && minLength > maxLength)
    throw new InvalidArgumentError(`${at}: minLength ${minLength} is over maxLength ${maxLength}`);
  const minItems = int('minItems', L.items),
    maxItems = int('maxItems', L.items);
  if (minItems !== undefined && maxItems !== undefined && minItems > maxItems)
    throw new InvalidArgumentError(`${at}: minItems ${minItems} is over maxItems ${maxItems}`);
  const lo = [num('minimum'), num('exclusiveMinimum')],
    hi = [num('maximum'), num('exclusiveMaximum')];
  for (const [i, a] of lo.entries())
    for (const [j, b] of hi.entries())
      if (a !== undefined && b !== undefined && (a > b || (a === b && (i === 1 || j === 1))))
        throw new InvalidArgumentError(
          `${at}: no number lies between ${i ? 'exclusiveMinimum' : 'minimum'} ${a} and ${j ? 'exclusiveMaximum' : 'maximum'} ${b}`,
        );
  if ('enum' in o) {
    if (!Array.isArray(o.enum) || o.enum.length === 0)
      throw new InvalidArgumentError(`${at}/enum must be a non-empty array`);
    if (o.enum.length > L.enumValues)
      throw new UnsupportedError(`${at}/enum has ${o.enum.length} values; at most ${L.enumValues} are supported`);
  }
  return (minLength ?? 0) + (maxLength ?? 0);
}

/**
 * Whether some finite document is valid under the schema. A schema such as
 * `{"$defs":{"n":{"$ref":"#/$defs/n"}},"$ref":"#/$defs/n"}` is not, and would compile to a grammar
 * that allows no token at all. The schema becomes a graph of AND and OR conditions (a $ref is an
 * edge to its definition's node), solved by propagating truth from the leaves: each edge is
 * followed once, so the time is linear in the schema (a fixed-point loop over the definitions was
 * quadratic in their number: 1.9 s for a chain of 5,000).
 */
function admitsDocument(root: JsonSchema, where: string): boolean {
  // need[n]: children still to become true before node n is (AND: all of them; OR: one).
  const need: number[] = [];
  const parents: number[][] = [];
  const becameTrue: number[] = [];
  const node = (kind: 'and' | 'or', children: number[]): number => {
    const n = need.length;
    need.push(kind === 'and' ? children.length : 1);
    parents.push([]);
    for (const c of children) parents[c].push(n);
    if (need[n] === 0) becameTrue.push(n);
    return n;
  };
  const TRUE = node('and', []);
  const r = root as Record<string, unknown>;
  const defs = new Map<string, { schema: unknown; node: number }>();
  for (const k of ['$defs', 'definitions'])
    for (const [name, d] of Object.entries((r[k] ?? {}) as Record<string, unknown>)) {
      // Its node's one child, the definition's own condition, is linked below.
      const n = need.length;
      need.push(1);
      parents.push([]);
      defs.set(`#/${k}/${name}`, { schema: d, node: n });
    }
  // Mirrors how the grammar compiler reads a schema: what a document under it must hold.
  const build = (s: unknown): number => {
    if (s === true || typeof s !== 'object' || s === null) return TRUE;
    const o = s as Record<string, unknown>;
    const all: number[] = [];
    if (typeof o.$ref === 'string') {
      const d = defs.get(o.$ref);
      if (!d)
        throw new InvalidArgumentError(`${where}: $ref ${JSON.stringify(o.$ref)} names no definition in this schema`);
      all.push(d.node);
    }
    if (Array.isArray(o.anyOf)) all.push(node('or', o.anyOf.map(build)));
    if (Array.isArray(o.allOf)) all.push(node('and', o.allOf.map(build)));
    const types = o.type === undefined ? undefined : Array.isArray(o.type) ? o.type : [o.type];
    // A scalar type allowed is a finite document already.
    if (!(types?.some((t) => t !== 'object' && t !== 'array') || 'enum' in o || 'const' in o)) {
      // Without a type, keywords of objects or arrays make it one.
      if (!types) {
        if ('properties' in o || 'required' in o) all.push(objectNode(o));
        else if ('items' in o || 'prefixItems' in o) all.push(arrayNode(o));
      } else {
        const ways: number[] = [];
        if (types.includes('object')) ways.push(objectNode(o));
        if (types.includes('array')) ways.push(arrayNode(o));
        all.push(node('or', ways));
      }
    }
    return node('and', all);
  };
  const objectNode = (o: Record<string, unknown>): number => {
    const props = (o.properties ?? {}) as Record<string, unknown>;
    const required = Array.isArray(o.required) ? o.required : [];
    return node(
      'and',
      required.map((p) => build(Object.hasOwn(props, p as string) ? props[p as string] : true)),
    );
  };
  const arrayNode = (o: Record<string, unknown>): number => {
    const min = typeof o.minItems === 'number' ? o.minItems : 0;
    const prefix = Array.isArray(o.prefixItems) ? o.prefixItems : [];
    const parts = prefix.slice(0, min).map(build);
    if (min > prefix.length) parts.push(build(o.items ?? true));
    return node('and', parts);
  };
  for (const d of defs.values()) parents[build(d.schema)].push(d.node);
  const top = build(root);
  for (let i = 0; i < becameTrue.length; i++)
    for (const p of parents[becameTrue[i]]) if (--need[p] === 0) becameTrue.push(p);
  return need[top] === 0;
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
export function formatSchema(
  format: ResponseFormat | undefined,
  where: string,
  budget?: SchemaBudget,
): JsonSchema | undefined {
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
      checkSchema(format.schema, `${where}.schema`, budget);
      return format.schema;
    default:
      throw new InvalidArgumentError(
        `${where}.type must be 'text', 'json_object' or 'json_schema', got ${JSON.stringify((format as { type?: unknown }).type)}`,
      );
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
      tokens: [
        TOKENS.channel,
        ...enc(`commentary to=functions.${n} `),
        TOKENS.constrain,
        ...enc('json'),
        TOKENS.message,
      ],
      name: n,
    }));
    // First message: reasoning, the answer or a call; after reasoning: the answer or a call.
    this.#first = { next: new Map() };
    this.#later = { next: new Map() };
    addPath(this.#first, [TOKENS.channel, ...enc('analysis'), TOKENS.message], 'reasoning');
    const prefix = [TOKENS.start, ...enc('assistant')];
    for (const [t, pre] of [
      [this.#first, []],
      [this.#later, prefix],
    ] as const) {
      if (spec.answer) addPath(t, [...pre, ...final], 'final');
      for (const c of tools) addPath(t, [...pre, ...c.tokens], { tool: c.name });
    }
    if (spec.enforced) this.#node = this.#first;
    else this.#header = [];
  }

  get enforced(): boolean {
    return this.#spec.enforced;
  }

  /** Compiles every grammar the turn may open (the answer's, the callable strict tools'), so that
   * opening one finds it compiled: a caller does this before the sequence joins a batch, whose
   * steps would otherwise wait on the compile. */
  async compile(): Promise<void> {
    const s = this.#spec;
    const tools = [...s.tools].filter(([n]) => !s.enforced || s.callable.includes(n)).map(([, x]) => x);
    const schemas = s.final && s.answer ? [s.final, ...tools] : tools;
    await Promise.all(schemas.map((x) => compileJsonSchema(x)));
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
    if (this.#pending !== undefined)
      this.#error ??= new InvalidArgumentError('constraint: a token was accepted without prepare()');
    this.#pending = token;
  }

  async #maskNow(): Promise<Int32Array | null> {
    if (this.#done) return null;
    if (this.#node) return maskOf(this.#node.next.keys());
    if (this.#body?.kind === 'json') {
      const mask = await this.#body.matcher.step();
      if (mask) return mask;
      this.#finish(); // the document is complete and its stop token taken: the turn is over
      return null;
    }
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
      return;
    }
    if (t === TOKENS.end) {
      this.#body = undefined;
      if (this.enforced) this.#node = this.#later;
      else this.#header = [];
    } else if (t === TOKENS.return || t === TOKENS.call) this.#finish();
  }

  async #open(kind: NonNullable<Trie['body']>): Promise<void> {
    const schema =
      kind === 'final' ? this.#spec.final : kind === 'reasoning' ? undefined : this.#spec.tools.get(kind.tool);
    if (schema) {
      this.#body = {
        kind: 'json',
        matcher: await JsonMatcher.create(schema, kind === 'final' ? TOKENS.return : TOKENS.call),
      };
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
export function chatConstraint(
  final: JsonSchema | undefined,
  strictTools: Map<string, JsonSchema>,
  toolNames: string[],
  choice: ToolChoice,
  vocabSize: number,
): HarmonyConstraint | undefined {
  const forced = choice === 'required' || typeof choice === 'object';
  const enforced = final !== undefined || forced || (choice === 'none' && toolNames.length > 0);
  if (!enforced && strictTools.size === 0) return undefined;
  if (vocabSize !== GRAMMAR_VOCAB)
    throw new UnsupportedError(
      `constrained decoding needs the o200k_harmony vocabulary (${GRAMMAR_VOCAB} rows); this model has ${vocabSize}`,
    );
  const callable = choice === 'none' ? [] : typeof choice === 'object' ? [choice.name] : toolNames;
  return new HarmonyConstraint({ enforced, final, answer: !forced, tools: strictTools, callable });
}

/** Checks a tool_choice against the request's tools. */
export function checkToolChoice(choice: unknown, toolNames: string[], where: string): ToolChoice {
  if (choice === undefined || choice === null) return 'auto';
  if (choice === 'auto' || choice === 'none') return choice;
  if (
    choice === 'required' ||
    (typeof choice === 'object' && typeof (choice as { name?: unknown }).name === 'string')
  ) {
    if (toolNames.length === 0)
      throw new InvalidArgumentError(`${where}: a tool must be called but the request has no tools`);
    if (typeof choice === 'object' && !toolNames.includes((choice as { name: string }).name))
      throw new InvalidArgumentError(
        `${where}: unknown tool ${JSON.stringify((choice as { name: string }).name)}; the request's tools are ${toolNames.join(', ')}`,
      );
    return choice as ToolChoice;
  }
  throw new InvalidArgumentError(
    `${where} must be 'auto', 'none', 'required' or {name}, got ${JSON.stringify(choice)}`,
  );
}
