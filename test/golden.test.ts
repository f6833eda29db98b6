// Parity with the official reference (test/fixtures/README.md): every fixture and case, both
// layouts, both modes, as one prefill, token by token, and a prefix followed by decode.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, type Model } from '../lib/index.js';
import { copyFixture, fixtures, relErr } from './helpers/checkpoint.js';

interface Cases {
  vocab_size: number;
  cases: { name: string; tokens: number[]; logits_fp32: string; bf16_vs_fp32_rel_err: number }[];
}

const tolerance = { fp32: 1e-4, default: 1e-3 } as const;

for (const fixture of ['tiny-a', 'tiny-b']) {
  const cases = JSON.parse(readFileSync(join(fixtures, fixture, 'cases.json'), 'utf8')) as Cases;
  for (const layout of ['original', 'hf'] as const) {
    for (const mode of ['fp32', 'default'] as const) {
      describe(`${fixture} ${layout} layout, ${mode} mode`, () => {
        let model: Model;
        beforeAll(async () => {
          model = await loadModel(join(fixtures, fixture, layout), { mode });
        });
        afterAll(() => model.dispose());

        it('loads the layout it was given', () => {
          expect(model.layout).toBe(layout);
          expect(model.config.vocabSize).toBe(cases.vocab_size);
        });

        for (const c of cases.cases) {
          const ref = () => new Float32Array(readFileSync(join(fixtures, fixture, c.logits_fp32)).buffer.slice(0));
          const tol = tolerance[mode];

          it(`${c.name}: one prefill matches the reference's float32 logits within ${tol}`, async () => {
            const s = model.createSession();
            const out = await s.forward(c.tokens);
            expect(relErr(out, ref())).toBeLessThan(tol);
            s.dispose();
          });

          it(`${c.name}: token-by-token decode matches the reference within ${tol}`, async () => {
            const s = model.createSession();
            const V = cases.vocab_size;
            const out = new Float32Array(c.tokens.length * V);
            for (let i = 0; i < c.tokens.length; i++)
              out.set(await s.forward([c.tokens[i]], { logits: 'last' }), i * V);
            expect(s.position).toBe(c.tokens.length);
            expect(relErr(out, ref())).toBeLessThan(tol);
            s.dispose();
          });

          it(`${c.name}: prefill of a prefix, then decode, matches the reference within ${tol}`, async () => {
            const s = model.createSession();
            const V = cases.vocab_size;
            const split = Math.ceil(c.tokens.length / 2);
            const head = await s.forward(c.tokens.slice(0, split));
            const out = new Float32Array(c.tokens.length * V);
            out.set(head);
            for (let i = split; i < c.tokens.length; i++)
              out.set(await s.forward([c.tokens[i]], { logits: 'last' }), i * V);
            expect(relErr(out, ref())).toBeLessThan(tol);
            s.dispose();
          });

          it(`${c.name}: chunked prefill (7 tokens a step, ring-buffered sliding window) matches one prefill`, async () => {
            const whole = model.createSession();
            const chunked = model.createSession({ maxTokens: 7 });
            const a = await whole.forward(c.tokens);
            const b = await chunked.forward(c.tokens);
            expect(relErr(b, a)).toBeLessThan(1e-5);
            expect(relErr(b, ref())).toBeLessThan(tol);
            whole.dispose();
            chunked.dispose();
          });
        }
      });
    }
  }
}

describe('sequences longer than the sliding window', () => {
  it('the fixtures include them (so the window is exercised above)', () => {
    const a = JSON.parse(readFileSync(join(fixtures, 'tiny-a', 'cases.json'), 'utf8')) as Cases;
    const b = JSON.parse(readFileSync(join(fixtures, 'tiny-b', 'cases.json'), 'utf8')) as Cases;
    expect(Math.max(...a.cases.map((c) => c.tokens.length))).toBeGreaterThan(128); // tiny-a window 128
    expect(Math.max(...b.cases.map((c) => c.tokens.length))).toBeGreaterThan(8); // tiny-b window 8
  });

  it('a window wider than the sequence gives different logits (the window is exercised)', async () => {
    // Negative control: tiny-b's 40-token case with sliding_window 64 (no key ever falls out).
    const dir = copyFixture('tiny-b/original');
    const cfgFile = join(dir, 'config.json');
    writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, 'utf8')), sliding_window: 64 }));
    const cases = JSON.parse(readFileSync(join(fixtures, 'tiny-b', 'cases.json'), 'utf8')) as Cases;
    const c = cases.cases.find((x) => x.tokens.length > 8)!;
    const model = await loadModel(dir, { mode: 'fp32' });
    const out = await model.createSession().forward(c.tokens);
    const ref = new Float32Array(readFileSync(join(fixtures, 'tiny-b', c.logits_fp32)).buffer.slice(0));
    expect(relErr(out, ref)).toBeGreaterThan(1e-2);
    model.dispose();
  });
});
