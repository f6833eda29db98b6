// o200k_harmony: round trips over multilingual text, emoji and long inputs; special tokens;
// streaming decoding that never emits half a UTF-8 character.
import { describe, expect, it } from 'vitest';

import { getTokenizer, InvalidArgumentError, SPECIAL_TOKENS } from '../lib/index.js';

const tok = getTokenizer();

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
    expect([tok.encode('assistant'), tok.encode('analysis'), tok.encode('final'), tok.encode('system'), tok.encode('user')]).toEqual([[173781], [35644], [17196], [17360], [1428]]);
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
});
