// Grammars over o200k_harmony's tokens, by xgrammar (@mlc-ai/web-xgrammar, WASM): a JSON Schema
// is compiled once against the vocabulary, and a matcher per sequence gives the mask of tokens
// that keep the output a prefix of some valid document.
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';

import { InvalidArgumentError, UnsupportedError } from './errors.js';
import { getTokenizer } from './tokenizer.js';

/** The vocabulary xgrammar is built for: o200k_harmony's 201,088 rows. */
export const GRAMMAR_VOCAB = 201088;
/** Ids below this are byte-pair tokens; the rest are Harmony's specials and reserved ids. */
const FIRST_SPECIAL = 199998;

interface Xgrammar {
  TokenizerInfo: { createTokenizerInfo(vocab: string[], type: string, prependSpace: boolean, vocabSize: number, stop: number[]): Promise<unknown> };
  GrammarCompiler: { createGrammarCompiler(info: unknown, cache?: boolean): Promise<XCompiler> };
  GrammarMatcher: { createGrammarMatcher(g: XCompiled, stop?: number[]): Promise<XMatcher> };
}
interface XCompiler {
  compileJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strict?: boolean): Promise<XCompiled>;
}
interface XCompiled {
  dispose(): void;
}
interface XMatcher {
  acceptToken(id: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  dispose(): void;
}

let loaded: Xgrammar | undefined;

// The package labels its UMD bundle an ES module, which it is not: compile it as CommonJS.
function xgrammar(): Xgrammar {
  if (loaded) return loaded;
  const file = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
  const m = new Module(file) as Module & { _compile(src: string, file: string): void; filename: string; paths: string[] };
  m.filename = file;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
  m._compile(readFileSync(file, 'utf8'), file);
  loaded = m.exports as Xgrammar;
  return loaded;
}

// GPT-2's byte-to-character map: how Hugging Face writes byte-level tokens, which xgrammar's
// "byte_level" vocabulary type decodes back to bytes (a token may be part of a UTF-8 character).
function byteLevelMap(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCharCode(printable.includes(b) ? b : 256 + extra++);
  return map;
}

let compilerPromise: Promise<XCompiler> | undefined;

// About half a second, once per process: every token's bytes, then xgrammar's preprocessing.
function compiler(): Promise<XCompiler> {
  compilerPromise ??= (async () => {
    const xg = xgrammar();
    const tok = getTokenizer();
    const map = byteLevelMap();
    const vocab = new Array<string>(GRAMMAR_VOCAB);
    for (let id = 0; id < GRAMMAR_VOCAB; id++) {
      // Specials are empty strings: xgrammar never lets text match them.
      if (id >= FIRST_SPECIAL) {
        vocab[id] = '';
        continue;
      }
      let s = '';
      for (const b of tok.decodeBytes([id])) s += map[b];
      vocab[id] = s;
    }
    const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, 'byte_level', false, GRAMMAR_VOCAB, []);
    return xg.GrammarCompiler.createGrammarCompiler(info, true);
  })();
  compilerPromise.catch(() => (compilerPromise = undefined));
  return compilerPromise;
}

const compiled = new Map<string, Promise<XCompiled>>();
const MAX_COMPILED = 64;

/** Compiles (or takes from the cache) the grammar of documents valid under `schema`; one line,
 * `{"a": 1, "b": [2, 3]}` spacing, no properties beyond those the schema names. */
export function compileJsonSchema(schema: object): Promise<XCompiled> {
  const key = JSON.stringify(schema);
  let g = compiled.get(key);
  if (g) {
    compiled.delete(key); // most recently used last
    compiled.set(key, g);
    return g;
  }
  g = compiler().then((c) =>
    c.compileJSONSchema(key, false, -1, undefined, true).catch((e: unknown) => {
      throw new UnsupportedError(`the grammar compiler rejected this JSON Schema (${(e as Error)?.message ?? e})`, { cause: e });
    }),
  );
  g.catch(() => compiled.delete(key));
  compiled.set(key, g);
  while (compiled.size > MAX_COMPILED) {
    const [oldest, p] = compiled.entries().next().value as [string, Promise<XCompiled>];
    compiled.delete(oldest);
    void p.then((c) => c.dispose(), () => {});
  }
  return g;
}

/** One sequence's position in a grammar. `stop` is the token that may end a complete document. */
export class JsonMatcher {
  readonly #m: XMatcher;

  private constructor(m: XMatcher) {
    this.#m = m;
  }

  static async create(schema: object, stop: number): Promise<JsonMatcher> {
    const g = await compileJsonSchema(schema);
    return new JsonMatcher(await xgrammar().GrammarMatcher.createGrammarMatcher(g, [stop]));
  }

  /** ceil(V / 32) words; bit (id & 31) of word id >> 5 set = id may come next. */
  mask(): Promise<Int32Array> {
    return this.#m.getNextTokenBitmask();
  }

  accept(token: number): void {
    if (!this.#m.acceptToken(token)) throw new InvalidArgumentError(`token ${token} does not continue the document the grammar allows`);
  }

  get terminated(): boolean {
    return this.#m.isTerminated();
  }

  dispose(): void {
    this.#m.dispose();
  }
}

/** A mask allowing exactly these ids. */
export function maskOf(ids: Iterable<number>, vocab = GRAMMAR_VOCAB): Int32Array {
  const m = new Int32Array((vocab + 31) >>> 5);
  for (const id of ids) m[id >>> 5] |= 1 << (id & 31);
  return m;
}

/** A mask allowing every byte-pair token plus these ids. */
export function textMaskPlus(ids: Iterable<number>, vocab = GRAMMAR_VOCAB): Int32Array {
  const m = maskOf(ids, vocab);
  m.fill(-1, 0, FIRST_SPECIAL >>> 5);
  for (let id = FIRST_SPECIAL & ~31; id < FIRST_SPECIAL; id++) m[id >>> 5] |= 1 << (id & 31);
  return m;
}
