// The AI SDK provider driven by the `ai` package itself: generateText, streamText (text and
// reasoning parts, abort), generateObject (the schema enforced by constrained decoding) and tool
// calls, on an engine over a random model with the real vocabulary.
import { generateObject, generateText, jsonSchema, Output, streamText, tool } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';

import { gptOss } from '../lib/ai-sdk.js';
import { createEngine, type Engine, loadModel, type Model } from '../lib/index.js';
import { TOKENS } from '../lib/chat/tokenizer.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

let model: Model;
let engine: Engine;
beforeAll(async () => {
  model = await loadModel(tinyRealVocabCheckpoint(13));
  engine = await createEngine({ model, maxSequences: 4, maxContext: 1024 });
});
afterAll(async () => {
  await engine?.close({ abort: true });
  model?.dispose();
});

// The random model's reasoning never ends by itself; this ends it at once where a test needs an answer.
const endReasoning = { 'gpt-oss': { logitBias: { [TOKENS.end]: 100, [TOKENS.return]: 5 } } };

describe('generateText', () => {
  it('returns the text and usage, with the same text for the same seed', async () => {
    const run = () => generateText({ model: gptOss(engine), prompt: 'Say hi.', maxOutputTokens: 12, seed: 4 });
    const a = await run();
    const b = await run();
    expect(a.text).toBe(b.text);
    expect(a.usage.outputTokens).toBeGreaterThan(0);
    expect(a.usage.inputTokens).toBeGreaterThan(10);
    expect(a.finishReason).toBe('length');
  });

  it('reasoning comes back as reasoning, not as text', async () => {
    // With a call required the turn's structure is enforced: the model opens the analysis channel
    // (random reasoning until the budget ends) or calls at once. Some seeds reason.
    const noop = tool({
      inputSchema: jsonSchema<Record<string, never>>({ type: 'object', properties: {}, additionalProperties: false }),
    });
    let reasoned = 0;
    for (let seed = 0; seed < 6; seed++) {
      // streamText: generateText would (rightly) throw when a required call did not come.
      const s = streamText({
        model: gptOss(engine),
        prompt: 'Think.',
        tools: { noop },
        toolChoice: 'required',
        maxOutputTokens: 16,
        seed,
        onError: () => {},
      });
      let reasoning = '',
        text = '';
      for await (const p of s.fullStream) {
        if (p.type === 'reasoning-delta') reasoning += p.text;
        if (p.type === 'text-delta') text += p.text;
      }
      const full = await engine
        .chat([{ role: 'user', content: 'Think.' }], {
          tools: [{ name: 'noop', parameters: { type: 'object', properties: {}, additionalProperties: false } }],
          toolChoice: 'required',
          maxTokens: 16,
          seed,
        })
        .result();
      expect(reasoning).toBe(full.reasoning);
      expect(text).toBe('');
      if (full.reasoning) reasoned++;
    }
    expect(reasoned).toBeGreaterThan(0);
  });

  it('calls a tool whose arguments follow its schema (tool choice forced, strict)', async () => {
    const weather = tool({
      description: 'Weather for a city',
      inputSchema: jsonSchema<{ city: 'Paris' | 'Oslo'; days: number }>({
        type: 'object',
        properties: { city: { enum: ['Paris', 'Oslo'] }, days: { type: 'integer', minimum: 1, maximum: 5 } },
        required: ['city', 'days'],
        additionalProperties: false,
      }),
      strict: true,
    });
    const r = await generateText({
      model: gptOss(engine),
      prompt: 'Weather in Paris?',
      tools: { weather },
      toolChoice: { type: 'tool', toolName: 'weather' },
      maxOutputTokens: 100,
      seed: 1,
      providerOptions: endReasoning,
    });
    expect(r.finishReason).toBe('tool-calls');
    expect(r.toolCalls).toHaveLength(1);
    const call = r.toolCalls[0];
    expect(call.toolName).toBe('weather');
    expect(['Paris', 'Oslo']).toContain((call.input as { city: string }).city);
    expect(call.toolCallId).toMatch(/^call_[0-9a-f]{8}_call_0$/);
  });
});

describe('streamText', () => {
  it('streams the same text generateText returns', async () => {
    const args = { model: gptOss(engine), prompt: 'Stream.', maxOutputTokens: 14, seed: 9 };
    const whole = await generateText(args);
    const s = streamText(args);
    let text = '';
    for await (const d of s.textStream) text += d;
    expect(text).toBe(whole.text);
    expect(await s.finishReason).toBe(whole.finishReason);
  });

  it('an abort signal ends the stream and frees the sequence', async () => {
    const ac = new AbortController();
    const s = streamText({
      model: gptOss(engine),
      prompt: 'Go on forever.',
      maxOutputTokens: 5000,
      abortSignal: ac.signal,
      seed: 2,
      onError: () => {},
    });
    setTimeout(() => ac.abort(), 200);
    let parts = 0;
    await expect(
      (async () => {
        for await (const _ of s.fullStream) parts++;
        await s.text;
      })(),
    ).rejects.toThrow();
    expect(parts).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(engine.stats().running).toBe(0);
  });
});

describe('structured output', () => {
  globalThis.AI_SDK_LOG_WARNINGS = false; // generateObject's deprecation notice
  it('the object validates against the zod schema (enforced while it is generated)', async () => {
    const schema = z.object({
      drink: z.enum(['tea', 'coffee', 'water']),
      cups: z.number().int().min(1).max(4),
      hot: z.boolean(),
    });
    for (const seed of [1, 2, 3]) {
      const r = await generateObject({
        model: gptOss(engine),
        schema,
        prompt: 'Order a drink.',
        maxOutputTokens: 120,
        seed,
        providerOptions: endReasoning,
      });
      expect(schema.parse(r.object)).toEqual(r.object);
    }
  });

  it("generateText's Output.object (the newer form) does the same", async () => {
    const schema = z.object({ size: z.enum(['S', 'M', 'L']), qty: z.number().int().min(1).max(9) });
    const r = await generateText({
      model: gptOss(engine),
      output: Output.object({ schema }),
      prompt: 'Pick a size.',
      maxOutputTokens: 120,
      seed: 5,
      providerOptions: endReasoning,
    });
    expect(schema.parse(r.output)).toEqual(r.output);
  });
});
