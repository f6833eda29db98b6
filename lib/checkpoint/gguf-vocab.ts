// o200k_harmony as a GGUF vocabulary (llama.cpp's "gpt2" byte-level BPE with the "gpt-4o"
// pre-tokenizer): every token's bytes spelled through GPT-2's byte-to-character map, a type per
// token, and the merge list. The ranks come from o200k_base in the `tiktoken` package, as for
// lib/chat/tokenizer.ts; the specials are Harmony's (SPECIAL_TOKENS, reserved names to the end).
//
// tiktoken stores ranks, not merges. The merge that makes token t is the last step of BPE run on
// t's own bytes with only the ranks below t's (the usual derivation for tiktoken vocabularies):
// that leaves exactly two parts, and "left right" is the merge, listed in t's rank order.
import { createRequire } from 'node:module';

import { SPECIAL_TOKENS } from '../chat/tokenizer.js';

/** GGUF token types (llama.cpp's llama_token_type). */
export const TOKEN_TYPE = { normal: 1, control: 3 } as const;

export interface GgufVocab {
  /** By id: the token's bytes as GPT-2 byte characters (ordinary tokens) or its name (specials). */
  tokens: string[];
  types: Int32Array;
  merges: string[];
  bos: number;
  eos: number;
  pad: number;
}

/** GPT-2's reversible byte -> printable character map: bytes that print stand for themselves, the
 * rest take characters from U+0100 on, in byte order. */
function byteChars(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(printable(b) ? b : next++));
  return out;
}

let cached: GgufVocab | undefined;

/** The o200k_harmony vocabulary of `size` ids (gpt-oss: 201,088), built once per process (~1 s). */
export function harmonyVocab(size = 201088): GgufVocab {
  if (cached && cached.tokens.length === size) return cached;
  const require = createRequire(import.meta.url);
  const base = require('tiktoken/encoders/o200k_base.json') as { bpe_ranks: string };
  const fields = base.bpe_ranks.split(' ');
  if (fields[0] !== '!') throw new Error('gguf vocab: unexpected o200k_base rank format');
  // Token bytes as latin1 strings (one char per byte), by rank.
  const bytes: string[] = [];
  for (let i = 2, rank = Number(fields[1]); i < fields.length; i++, rank++) bytes[rank] = atob(fields[i]);
  const ordinary = bytes.length;
  const firstSpecial = Math.min(...Object.values(SPECIAL_TOKENS));
  if (ordinary !== firstSpecial)
    throw new Error(`gguf vocab: o200k_base has ${ordinary} ranks; Harmony's specials start at ${firstSpecial}`);
  if (size < ordinary + Object.keys(SPECIAL_TOKENS).length)
    throw new Error(`gguf vocab: ${size} ids cannot hold o200k_harmony's ${ordinary} ranks and its specials`);
  const rankOf = new Map<string, number>();
  bytes.forEach((b, r) => rankOf.set(b, r));

  const map = byteChars();
  const spell = (s: string) => {
    let out = '';
    for (let i = 0; i < s.length; i++) out += map[s.charCodeAt(i)];
    return out;
  };
  const tokens: string[] = bytes.map(spell);
  const types = new Int32Array(size).fill(TOKEN_TYPE.normal);
  const specials = new Map<number, string>(Object.entries(SPECIAL_TOKENS).map(([s, id]) => [id, s]));
  for (let id = ordinary; id < size; id++) {
    tokens.push(specials.get(id) ?? `<|reserved_${id}|>`);
    types[id] = TOKEN_TYPE.control;
  }

  const merges: string[] = [];
  for (let rank = 0; rank < ordinary; rank++) {
    const t = bytes[rank];
    if (t.length < 2) continue;
    // BPE on t's bytes with the ranks below t's: merge the lowest-ranked adjacent pair until none.
    const parts = t.split('');
    for (;;) {
      let best = -1,
        bestRank = rank;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = rankOf.get(parts[i] + parts[i + 1]);
        if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) break;
      parts.splice(best, 2, parts[best] + parts[best + 1]);
    }
    if (parts.length !== 2) throw new Error(`gguf vocab: token ${rank} does not split into one merge`);
    merges.push(`${spell(parts[0])} ${spell(parts[1])}`);
  }
  cached = {
    tokens,
    types,
    merges,
    bos: SPECIAL_TOKENS['<|startoftext|>'],
    eos: SPECIAL_TOKENS['<|return|>'],
    pad: SPECIAL_TOKENS['<|endoftext|>'],
  };
  return cached;
}
