// o200k_harmony (kernels/MODEL.md, "Tokenizer"): o200k_base's ranks and pre-tokenizer regex, both
// shipped in the `tiktoken` package (WASM, nothing downloaded), plus Harmony's special tokens at
// fixed ids.
//
// tiktoken's merge step rescans a whole piece for every merge: quadratic, so one long piece (100 KB
// of one letter is a single piece) took 12 s, and 1 MB trapped the WASM. Text longer than
// LONG_PIECE is therefore split into pieces here, with the same pattern: runs of ordinary pieces
// still go to tiktoken, cut only between pieces (BPE never merges across them; one kind of cut
// needs a stand-in, see #ordinaryInto), and each long piece is merged by mergeLong(), the same
// merge with a heap. The ids are the reference's for every text, long pieces included
// (test/tokenizer.test.ts compares them on generated text).
// encodeAsync() runs large work on a worker thread (lib/chat/tokenizer-worker.ts): 4 MB of prose still
// takes about a second, which a server's event loop cannot spare.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

import { BusyError, InvalidArgumentError } from '../errors.js';

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

/** Pieces longer than this (UTF-16 units) are merged by mergeLong(), not tiktoken: tiktoken takes
 * 0.4 ms on the worst such piece (256 CJK characters), and the heap is no faster below that. */
const LONG_PIECE = 256;
/** Text handed to tiktoken at once, at most: bounds the WASM memory one call grows (it never shrinks). */
const TIKTOKEN_CHUNK = 65_536;
/** encodeAsync() encodes up to this many characters inline (about 10 ms of prose); more goes to the
 * worker thread, whose queue small requests then need not wait in. */
const INLINE_MAX = 32_768;

// o200k_base's pattern (tiktoken's pat_str; test/tokenizer.test.ts checks it is unchanged) in
// JavaScript's syntax: Rust's \s is \p{White_Space} (JavaScript's \s adds U+FEFF and lacks U+0085),
// and the case-insensitive group (?i:'s|'t|...) is spelled out ('s also matches 'ſ, U+017F, as
// Unicode case folding has it). Sticky: pieces are read one after another.
const CONTRACTION = "(?:'[sS\\u017F]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const UPPER = '[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]';
const LOWER = '[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]';
const LEAD = '[^\\r\\n\\p{L}\\p{N}]';
const PIECE = new RegExp(
  [
    `${LEAD}?${UPPER}*${LOWER}+${CONTRACTION}?`,
    `${LEAD}?${UPPER}+${LOWER}*${CONTRACTION}?`,
    '\\p{N}{1,3}',
    ' ?[^\\p{White_Space}\\p{L}\\p{N}]+[\\r\\n/]*',
    '\\p{White_Space}*[\\r\\n]+',
    '\\p{White_Space}+(?!\\P{White_Space})',
    '\\p{White_Space}+',
  ].join('|'),
  'uy',
);
const WHITE_SPACE = /\p{White_Space}/u;
/** The token of '0' in o200k_base. */
const ZERO = 15;
/** Every special token's spelling has this shape, and no two can overlap. */
const SPECIAL_SHAPE = /<\|[a-z0-9_]+\|>/g;

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
  readonly #rankText: string;
  /** o200k_base's token bytes (as latin1 strings) to ids, for mergeLong(); built on first use (~0.3 s). */
  #ranks: Map<string, number> | undefined;
  /** Ids that map to bytes: o200k_base's ranks plus the specials. */
  readonly maxId = LAST_RESERVED;

  /** @internal use getTokenizer() */
  constructor() {
    const require = createRequire(import.meta.url);
    const { Tiktoken } = require('tiktoken/lite') as {
      Tiktoken: new (ranks: string, specials: Record<string, number>, pat: string) => TiktokenLike;
    };
    const base = require('tiktoken/encoders/o200k_base.json') as { bpe_ranks: string; pat_str: string };
    this.#specials = new Map(Object.entries(SPECIAL_TOKENS));
    for (let id = 200014; id <= LAST_RESERVED; id++) this.#specials.set(`<|reserved_${id}|>`, id);
    this.#specialById = new Map([...this.#specials].map(([s, id]) => [id, s]));
    this.#bpe = new Tiktoken(base.bpe_ranks, Object.fromEntries(this.#specials), base.pat_str);
    this.#rankText = base.bpe_ranks;
    if (this.#bpe.encode_ordinary('0')[0] !== ZERO) throw new Error('tokenizer: o200k_base has another id for "0"');
  }

  /** Text to token ids. Special-token text is ordinary text unless allowed. Linear in the text. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new InvalidArgumentError('encode(text): text must be a string');
    const allowed = this.#allowed(options.allowedSpecial);
    // Short text holds no long piece: tiktoken alone is exact and fastest.
    if (text.length <= LONG_PIECE) {
      if (!allowed) return Array.from(this.#bpe.encode_ordinary(text));
      // Specials not allowed are plain text too (never an error, unlike tiktoken's default).
      return Array.from(this.#bpe.encode(text, allowed === 'all' ? 'all' : [...allowed], []));
    }
    const out: number[] = [];
    if (!allowed) {
      this.#ordinaryInto(text, out);
      return out;
    }
    // As tiktoken: ordinary text between the allowed specials, leftmost first.
    let at = 0;
    for (const m of text.matchAll(SPECIAL_SHAPE)) {
      const id = allowed === 'all' || allowed.has(m[0]) ? this.#specials.get(m[0]) : undefined;
      if (id === undefined) continue;
      this.#ordinaryInto(text.slice(at, m.index), out);
      out.push(id);
      at = m.index + m[0].length;
    }
    this.#ordinaryInto(text.slice(at), out);
    return out;
  }

  /**
   * As encode(), without holding the event loop for long: large work (over INLINE_MAX characters,
   * or a piece long enough for mergeLong()) runs on a worker thread with its own tokenizer; the
   * rest inline. Requests on the thread run one after another.
   */
  encodeAsync(text: string, options: EncodeOptions = {}): Promise<number[]> {
    return this.encodePartsAsync([text], options);
  }

  /**
   * Texts and token ids, in order, to ids: each text encoded on its own (as encodeAsync), each id
   * kept. One trip to the thread for a whole prompt, which also joins the ids there.
   */
  async encodePartsAsync(parts: readonly (string | number)[], options: EncodeOptions = {}): Promise<number[]> {
    if (!Array.isArray(parts) || parts.some((p) => typeof p !== 'string' && !Number.isInteger(p)))
      throw new InvalidArgumentError('encodePartsAsync(parts): parts must be an array of strings and token ids');
    const allowed = this.#allowed(options.allowedSpecial);
    let total = 0;
    for (const p of parts) if (typeof p === 'string') total += p.length;
    const heavy =
      total > INLINE_MAX || parts.some((p) => typeof p === 'string' && p.length > LONG_PIECE && hasLongPiece(p));
    if (heavy) return encodeThread.run(parts, allowed === 'all' ? 'all' : allowed ? [...allowed] : undefined);
    return this.encodeParts(parts, options);
  }

  /** @internal encodePartsAsync() on this thread. */
  encodeParts(parts: readonly (string | number)[], options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    for (const p of parts) {
      if (typeof p === 'number') ids.push(p);
      else for (const id of this.encode(p, options)) ids.push(id);
    }
    return ids;
  }

  /** The allowed specials, checked: undefined for none. */
  #allowed(allowed: EncodeOptions['allowedSpecial']): 'all' | Set<string> | undefined {
    if (!allowed || (Array.isArray(allowed) && allowed.length === 0)) return undefined;
    if (allowed === 'all') return 'all';
    for (const s of allowed)
      if (!this.#specials.has(s)) throw new InvalidArgumentError(`encode: ${JSON.stringify(s)} is not a special token`);
    return new Set(allowed);
  }

  /** Ordinary text (no specials): runs of short pieces to tiktoken, long pieces to mergeLong(). */
  #ordinaryInto(text: string, out: number[]): void {
    const tiktoken = (from: number, to: number) => {
      // A cut between a space and a non-space needs care: the pieces of the space run before it
      // were chosen by what (?!\S) saw after them (two tabs before a '!' are the pieces '\t' and
      // '\t'; before the end of a string, one piece). A '0' stands in for that character: it is a
      // piece of its own after a space, so only its token is added, and dropped.
      const seen = to < text.length && WHITE_SPACE.test(text[to - 1]) && !WHITE_SPACE.test(text[to]);
      const ids = this.#bpe.encode_ordinary(seen ? `${text.slice(from, to)}0` : text.slice(from, to));
      const n = seen ? ids.length - 1 : ids.length;
      if (seen && ids[n] !== ZERO) throw new Error('tokenizer: the stand-in character did not stay a token of its own');
      for (let i = 0; i < n; i++) out.push(ids[i]);
    };
    if (text.length <= LONG_PIECE) {
      if (text.length > 0) tiktoken(0, text.length);
      return;
    }
    let run = 0; // start of the pieces not yet encoded
    PIECE.lastIndex = 0;
    while (PIECE.lastIndex < text.length) {
      const start = PIECE.lastIndex;
      // Every character starts some alternative (letter, number, space, other), so this matches.
      if (!PIECE.test(text)) throw new Error(`tokenizer: no pre-tokenizer piece at offset ${start}`);
      const end = PIECE.lastIndex;
      if (end - start > LONG_PIECE) {
        if (start > run) tiktoken(run, start);
        for (const id of this.#mergeLong(text.slice(start, end))) out.push(id);
        run = end;
      } else if (end - run >= TIKTOKEN_CHUNK) {
        tiktoken(run, end);
        run = end;
      }
    }
    if (run < text.length) tiktoken(run, text.length);
  }

  /**
   * BPE of one piece, as tiktoken merges it (the adjacent pair whose bytes have the lowest rank
   * first, the leftmost of equals), with a heap of candidate pairs instead of a rescan per merge:
   * O(n log n). Pairs are keyed (rank, start); an entry is stale once its left part is gone or has
   * grown past the entry's end.
   */
  #mergeLong(piece: string): number[] {
    const ranks = (this.#ranks ??= rankTable(this.#rankText));
    const bytes = Buffer.from(piece, 'utf8').toString('latin1'); // lone surrogates → U+FFFD, as tiktoken
    const n = bytes.length;
    const next = new Int32Array(n + 1); // part starting at i ends at next[i]; parts are 0, next[0], ...
    const prev = new Int32Array(n + 1);
    const alive = new Uint8Array(n + 1);
    for (let i = 0; i <= n; i++) {
      next[i] = i + 1;
      prev[i] = i - 1;
      alive[i] = 1;
    }
    const heap = new PairHeap(n);
    const consider = (i: number) => {
      const j = next[i];
      if (j >= n) return;
      const rank = ranks.get(bytes.slice(i, next[j]));
      if (rank !== undefined) heap.push(rank * 2 ** 32 + i, next[j]);
    };
    for (let i = 0; i < n - 1; i++) consider(i);
    while (heap.size > 0) {
      const { key, end } = heap.pop();
      const i = key % 2 ** 32;
      if (!alive[i] || next[next[i]] !== end) continue;
      alive[next[i]] = 0;
      next[i] = end;
      if (end <= n) prev[end] = i;
      consider(i);
      if (i > 0) consider(prev[i]);
    }
    const ids: number[] = [];
    for (let i = 0; i < n; i = next[i]) {
      const id = ranks.get(bytes.slice(i, next[i]));
      if (id === undefined) throw new Error(`tokenizer: no rank for a merged part of ${next[i] - i} bytes`); // every byte has one
      ids.push(id);
    }
    return ids;
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
      if (
        !Number.isInteger(t) ||
        t < 0 ||
        t > LAST_RESERVED ||
        (t >= 199998 && t < 200014 && !this.#specialById.has(t))
      )
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

/** Whether the text holds a piece that tiktoken would merge slowly. */
function hasLongPiece(text: string): boolean {
  PIECE.lastIndex = 0;
  while (PIECE.lastIndex < text.length) {
    const start = PIECE.lastIndex;
    if (!PIECE.test(text)) return true; // cannot happen; the caller then takes the careful path
    if (PIECE.lastIndex - start > LONG_PIECE) return true;
  }
  return false;
}

/** tiktoken's rank text ("! 0" then each token's base64, ranks counting up) as a lookup table. */
function rankTable(text: string): Map<string, number> {
  const fields = text.split(' ');
  if (fields[0] !== '!') throw new Error('tokenizer: unexpected o200k_base rank format');
  const ranks = new Map<string, number>();
  let rank = Number(fields[1]);
  for (let i = 2; i < fields.length; i++) ranks.set(atob(fields[i]), rank++); // atob: bytes as latin1
  return ranks;
}

/** A binary min-heap of (key, end) pairs in typed arrays: keys are rank * 2^32 + start. */
class PairHeap {
  #keys: Float64Array;
  #ends: Int32Array;
  size = 0;

  constructor(capacity: number) {
    this.#keys = new Float64Array(Math.max(capacity, 16));
    this.#ends = new Int32Array(Math.max(capacity, 16));
  }

  push(key: number, end: number): void {
    if (this.size === this.#keys.length) {
      const keys = new Float64Array(this.size * 2),
        ends = new Int32Array(this.size * 2);
      keys.set(this.#keys);
      ends.set(this.#ends);
      this.#keys = keys;
      this.#ends = ends;
    }
    const k = this.#keys,
      e = this.#ends;
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (k[p] <= key) break;
      k[i] = k[p];
      e[i] = e[p];
      i = p;
    }
    k[i] = key;
    e[i] = end;
  }

  pop(): { key: number; end: number } {
    const k = this.#keys,
      e = this.#ends;
    const top = { key: k[0], end: e[0] };
    const key = k[--this.size],
      end = e[this.size];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= this.size) break;
      if (c + 1 < this.size && k[c + 1] < k[c]) c++;
      if (k[c] >= key) break;
      k[i] = k[c];
      e[i] = e[c];
      i = c;
    }
    k[i] = key;
    e[i] = end;
    return top;
  }
}

/** What Tokenizer.encodePartsAsync() asks lib/chat/tokenizer-worker.ts, and its answer. */
export interface EncodeRequest {
  id: number;
  parts: readonly (string | number)[];
  allowed: 'all' | string[] | undefined;
}
export type EncodeReply = { id: number; ok: true; ids: Uint32Array } | { id: number; ok: false; message: string };

const workerFile = () =>
  import.meta.url.endsWith('.ts')
    ? new URL('../../dist/chat/tokenizer-worker.js', import.meta.url)
    : new URL('./tokenizer-worker.js', import.meta.url);

/** The worker thread behind encodeAsync(): started on first use, kept (unreferenced while idle,
 * so it holds no process open), replaced if it dies. */
class EncodeThread {
  #worker: Worker | undefined;
  readonly #calls = new Map<number, { resolve(ids: number[]): void; reject(e: Error): void }>();
  #seq = 0;

  run(parts: readonly (string | number)[], allowed: EncodeRequest['allowed']): Promise<number[]> {
    const worker = (this.#worker ??= this.#start());
    const id = ++this.#seq;
    if (this.#calls.size === 0) worker.ref();
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      worker.postMessage({ id, parts, allowed } satisfies EncodeRequest);
    });
  }

  #start(): Worker {
    const worker = new Worker(workerFile());
    worker.unref();
    worker.on('message', (m: EncodeReply) => {
      const call = this.#calls.get(m.id);
      if (!call) return;
      this.#calls.delete(m.id);
      if (this.#calls.size === 0) worker.unref();
      if (m.ok) toArray(m.ids).then(call.resolve, call.reject);
      else call.reject(new BusyError(`the tokenizer thread failed: ${m.message}`));
    });
    const fail = (e: Error) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined; // the next call starts a fresh thread
      for (const call of this.#calls.values()) call.reject(e);
      this.#calls.clear();
      void worker.terminate();
    };
    worker.on('error', (e) => fail(new BusyError(`the tokenizer thread failed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => fail(new BusyError(`the tokenizer thread exited (code ${code})`)));
    return worker;
  }
}

const encodeThread = new EncodeThread();

/** The thread's ids as an array, copied in slices with the event loop let through between them:
 * a 4 MB prompt's million ids take ~100 ms to copy. */
async function toArray(ids: Uint32Array): Promise<number[]> {
  const SLICE = 65_536;
  const out: number[] = [];
  for (let from = 0; from < ids.length; from += SLICE) {
    if (from > 0) await new Promise((resolve) => setImmediate(resolve));
    const to = Math.min(ids.length, from + SLICE);
    for (let i = from; i < to; i++) out.push(ids[i]);
  }
  return out;
}

let shared: Tokenizer | undefined;

/** The o200k_harmony tokenizer, built once per process (about 1 s: the ranks are parsed). */
export function getTokenizer(): Tokenizer {
  shared ??= new Tokenizer();
  return shared;
}
