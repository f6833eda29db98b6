// o200k_harmony: round trips over multilingual text, emoji and long inputs; special tokens;
// streaming decoding that never emits half a UTF-8 character.
import fc from 'fast-check';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

import { getTokenizer, InvalidArgumentError, SPECIAL_TOKENS } from '../lib/index.js';

const tok = getTokenizer();

// tiktoken's own o200k_base as the reference: fine on short pieces, quadratic on long ones.
const require = createRequire(import.meta.url);
const o200k = require('tiktoken/encoders/o200k_base.json') as { bpe_ranks: string; pat_str: string };
const { Tiktoken } = require('tiktoken/lite') as {
  Tiktoken: new (
    r: string,
    s: Record<string, number>,
    p: string,
  ) => { encode(t: string, a: 'all', d: string[]): Uint32Array; encode_ordinary(t: string): Uint32Array };
};
const reference = new Tiktoken(o200k.bpe_ranks, Object.fromEntries(Object.entries(SPECIAL_TOKENS)), o200k.pat_str);

const samples = [
  'Hello, world! The quick brown fox jumps over the lazy dog.',
  'Grüße aus Köln — naïve façade, señor, ça va ?',
  'Привет, как дела? Съешь же ещё этих мягких французских булок.',
  '日本語のテキストと中文文本，还有한국어 문장.',
  'مرحبا بالعالم — שלום עולם — नमस्ते दुनिया',
  'Emoji: 🦀🚀👩‍👩‍👧‍👦🏳️‍🌈 and skin tones 👍🏽, flags 🇳🇴🇯🇵, ZWJ sequences.',
  'Code: const x = (a) => a ** 2; // comment\n\tindented\r\n  spaces   ',
  '',
];

describe('o200k_harmony tokenizer', () => {
  it('decode(encode(s)) == s for multilingual text, emoji and whitespace', () => {
    for (const s of samples) expect(tok.decode(tok.encode(s))).toBe(s);
  });

  it('encodes known ids (harmony docs and tests)', () => {
    expect(tok.encode('hello world')).toEqual([24912, 2375]);
    expect(tok.encode('<|start|>')).toEqual([27, 91, 5236, 91, 29]); // text, not a control token
    expect(tok.encode('<|start|>', { allowedSpecial: 'all' })).toEqual([200006]);
    expect(tok.encode('<|start|>', { allowedSpecial: ['<|start|>'] })).toEqual([200006]);
    expect([
      tok.encode('assistant'),
      tok.encode('analysis'),
      tok.encode('final'),
      tok.encode('system'),
      tok.encode('user'),
    ]).toEqual([[173781], [35644], [17196], [17360], [1428]]);
    expect(SPECIAL_TOKENS['<|return|>']).toBe(200002);
    expect(tok.special('<|call|>')).toBe(200012);
    expect(tok.decode([200014, 201088])).toBe('<|reserved_200014|><|reserved_201088|>');
  });

  it('a long input (1 MB) round-trips', () => {
    const long = samples.join(' ').repeat(Math.ceil(1e6 / samples.join(' ').length));
    const ids = tok.encode(long);
    expect(ids.length).toBeGreaterThan(1e5);
    expect(tok.decode(ids)).toBe(long);
  });

  it('the stream decoder never emits half a character, and its pieces join to the text', () => {
    for (const s of samples) {
      const d = tok.streamDecoder();
      const pieces = tok.encode(s).map((t) => d.push(t));
      pieces.push(d.flush());
      for (const p of pieces) expect(p).not.toContain('\uFFFD');
      expect(pieces.join('')).toBe(s);
    }
    // A token that is only part of a character holds it back until the rest arrives.
    const ids = tok.encode('🦀');
    expect(ids.length).toBeGreaterThan(1);
    const d = tok.streamDecoder();
    expect(d.push(ids[0])).toBe('');
  });

  it('invalid ids and invalid UTF-8 give typed errors; lossy decode replaces bad bytes', () => {
    expect(() => tok.decode([99999999])).toThrow(InvalidArgumentError);
    expect(() => tok.decode([-1])).toThrow(/Invalid token for decoding: -1/);
    expect(() => tok.decodeUtf8([132990, 9552])).toThrow(/Invalid utf-8/);
    expect(tok.decode([132990, 9552])).toBe('Chicken \uFFFD');
    expect(() => tok.encode('x', { allowedSpecial: ['<|nope|>'] })).toThrow(/not a special token/);
  });

  it('long runs of one character encode in linear time and round-trip (tiktoken alone: 38 s for 200 KB of one letter)', () => {
    for (const ch of ['a', 'A', ' ', '!', '中', '1']) {
      const text = ch.repeat(200_000);
      const t0 = performance.now();
      const ids = tok.encode(text);
      expect(performance.now() - t0).toBeLessThan(10_000); // ~0.1 s each (the first also builds the rank table, ~0.3 s)
      expect(tok.decode(ids)).toBe(text);
    }
  }, 120_000);

  it('gives the reference ids for text with long pieces, also around special tokens', () => {
    // Alphabets whose runs make long pieces of each kind (letters, marks, whitespace, punctuation,
    // digits, CJK, case-folded contractions) next to ordinary short pieces.
    const unit = fc.constantFrom(
      'a',
      'b',
      'A',
      ' ',
      '\n',
      '\r',
      '\t',
      '!',
      '.',
      '/',
      '1',
      '中',
      'é',
      '\u0301',
      "'",
      's',
      'ſ',
      'll',
      '\u0085',
      '\uFEFF',
      '\u00A0',
      '🦀',
      'ǅ',
      'ـ',
      'я',
      '<|end|>',
    );
    const run = fc.oneof(
      fc.tuple(unit, fc.integer({ min: 200, max: 800 })).map(([u, n]) => u.repeat(n)),
      fc.array(unit, { maxLength: 30 }).map((a) => a.join('')),
    );
    fc.assert(
      fc.property(
        fc.array(run, { minLength: 1, maxLength: 6 }).map((a) => a.join('')),
        (text) => {
          expect(tok.encode(text)).toEqual(Array.from(reference.encode_ordinary(text)));
          expect(tok.encode(text, { allowedSpecial: 'all' })).toEqual(Array.from(reference.encode(text, 'all', [])));
        },
      ),
      // Found by this property: two tabs before a long run of apostrophes (a cut after a space).
      { numRuns: 300, examples: [['\t'.repeat(200) + "'".repeat(257)], ['x \t\t' + '!'.repeat(300) + '\n\n12']] },
    );
  }, 120_000);

  it('the pre-tokenizer pattern is the one lib/chat/tokenizer.ts ports to JavaScript', () => {
    // A new tiktoken with another pattern must fail here, not split text differently.
    expect(o200k.pat_str).toBe(
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    );
  });

  it('encodeAsync gives the same ids as encode, large (a worker thread) or small (inline)', async () => {
    const big = samples.join(' ').repeat(200) + 'z'.repeat(50_000) + '<|end|>';
    expect(await tok.encodeAsync(big)).toEqual(tok.encode(big));
    expect(await tok.encodeAsync(big, { allowedSpecial: 'all' })).toEqual(tok.encode(big, { allowedSpecial: 'all' }));
    expect(await tok.encodeAsync('hello world')).toEqual([24912, 2375]);
    await expect(tok.encodeAsync('x', { allowedSpecial: ['<|nope|>'] })).rejects.toThrow(InvalidArgumentError);
  }, 60_000);
});
