// o200k_harmony (gpt-oss-spec.md §5): o200k_base's ranks and pre-tokenizer regex, both shipped in
// the `tiktoken` package (WASM, nothing downloaded), plus Harmony's special tokens at fixed ids.
import { createRequire } from 'node:module';

import { InvalidArgumentError } from './errors.js';

/** Harmony's named special tokens (HAR public_encodings.rs). */
export const SPECIAL_TOKENS = {
  '<|startoftext|>': 199998,
  '<|endoftext|>': 199999,
  '<|reserved_200000|>': 200000,
  '<|reserved_200001|>': 200001,
  '<|return|>': 200002,
  '<|constrain|>': 200003,
  '<|reserved_200004|>': 200004,
  '<|channel|>': 200005,
  '<|start|>': 200006,
  '<|end|>': 200007,
  '<|message|>': 200008,
  '<|reserved_200009|>': 200009,
  '<|reserved_200010|>': 200010,
  '<|reserved_200011|>': 200011,
  '<|call|>': 200012,
  '<|reserved_200013|>': 200013,
} as const;

/** The last reserved id: Harmony reserves 200014..=201088 (one past the 201,088-row vocabulary). */
const LAST_RESERVED = 201088;

export const TOKENS = {
  return: 200002,
  constrain: 200003,
  channel: 200005,
  start: 200006,
  end: 200007,
  message: 200008,
  call: 200012,
} as const;

interface TiktokenLike {
  encode(text: string, allowedSpecial?: string[] | 'all', disallowedSpecial?: string[] | 'all'): Uint32Array;
  encode_ordinary(text: string): Uint32Array;
  decode(tokens: Uint32Array): Uint8Array;
}

export interface EncodeOptions {
  /** Special-token strings to recognise in the text: 'all', or a list. Default none: a special
   * token's text inside user text is encoded as ordinary text. */
  allowedSpecial?: 'all' | readonly string[];
}

export class Tokenizer {
  readonly #bpe: TiktokenLike;
  readonly #specials: Map<string, number>;
  readonly #specialById: Map<number, string>;
  /** Ids that map to bytes: o200k_base's ranks plus the specials. */
  readonly maxId = LAST_RESERVED;

  /** @internal use getTokenizer() */
  constructor() {
    const require = createRequire(import.meta.url);
    const { Tiktoken } = require('tiktoken/lite') as { Tiktoken: new (ranks: string, specials: Record<string, number>, pat: string) => TiktokenLike };
    const base = require('tiktoken/encoders/o200k_base.json') as { bpe_ranks: string; pat_str: string };
    this.#specials = new Map(Object.entries(SPECIAL_TOKENS));
    for (let id = 200014; id <= LAST_RESERVED; id++) this.#specials.set(`<|reserved_${id}|>`, id);
    this.#specialById = new Map([...this.#specials].map(([s, id]) => [id, s]));
    this.#bpe = new Tiktoken(base.bpe_ranks, Object.fromEntries(this.#specials), base.pat_str);
  }

  /** Text to token ids. Special-token text is ordinary text unless allowed. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new InvalidArgumentError('encode(text): text must be a string');
    const allowed = options.allowedSpecial;
    if (!allowed || (Array.isArray(allowed) && allowed.length === 0)) return Array.from(this.#bpe.encode_ordinary(text));
    if (allowed !== 'all')
      for (const s of allowed) if (!this.#specials.has(s)) throw new InvalidArgumentError(`encode: ${JSON.stringify(s)} is not a special token`);
    // Specials not allowed are plain text too (never an error, unlike tiktoken's default).
    return Array.from(this.#bpe.encode(text, allowed === 'all' ? 'all' : [...allowed], []));
  }

  /** The id of a special token by its text, e.g. '<|start|>'. */
  special(text: string): number {
    const id = this.#specials.get(text);
    if (id === undefined) throw new InvalidArgumentError(`${JSON.stringify(text)} is not a special token`);
    return id;
  }

  isSpecial(id: number): boolean {
    return this.#specialById.has(id);
  }

  /** The raw bytes of tokens (a token may hold part of a UTF-8 character). */
  decodeBytes(tokens: ArrayLike<number>): Uint8Array {
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t > LAST_RESERVED || (t >= 199998 && t < 200014 && !this.#specialById.has(t)))
        throw new InvalidArgumentError(`Invalid token for decoding: ${t}`);
    }
    try {
      return this.#bpe.decode(Uint32Array.from(tokens as ArrayLike<number>));
    } catch (e) {
      throw new InvalidArgumentError(`Invalid token for decoding: ${Array.from(tokens).join(',')}`, { cause: e });
    }
  }

  /** Tokens to text; invalid UTF-8 becomes U+FFFD. */
  decode(tokens: ArrayLike<number>): string {
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(this.decodeBytes(tokens));
  }

  /** Tokens to text, throwing on bytes that are not valid UTF-8. */
  decodeUtf8(tokens: ArrayLike<number>): string {
    try {
      return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(this.decodeBytes(tokens));
    } catch (e) {
      if (e instanceof InvalidArgumentError) throw e;
      throw new InvalidArgumentError('Invalid utf-8 in the decoded tokens', { cause: e });
    }
  }

  /** A decoder for tokens arriving one at a time: never emits half a UTF-8 character. */
  streamDecoder(): StreamDecoder {
    return new StreamDecoder(this);
  }
}

export class StreamDecoder {
  readonly #tok: Tokenizer;
  // ignoreBOM: a U+FEFF the model writes is text, not a byte-order mark to strip.
  readonly #utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

  constructor(tok: Tokenizer) {
    this.#tok = tok;
  }

  /** The text completed by this token (possibly empty while a character is split across tokens). */
  push(token: number): string {
    return this.#utf8.decode(this.#tok.decodeBytes([token]), { stream: true });
  }

  /** Whatever is left: an incomplete character at the end becomes U+FFFD. */
  flush(): string {
    return this.#utf8.decode();
  }
}

let shared: Tokenizer | undefined;

/** The o200k_harmony tokenizer, built once per process (about 1 s: the ranks are parsed). */
export function getTokenizer(): Tokenizer {
  shared ??= new Tokenizer();
  return shared;
}
