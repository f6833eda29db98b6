// model.chat() / model.complete() on a random checkpoint with the real vocabulary (its text is
// random; the plumbing is what is tested), and the chat event translation on scripted tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  AbortedError,
  ChatStream,
  ContextOverflowError,
  getTokenizer,
  HarmonyError,
  InvalidArgumentError,
  loadModel,
  type Model,
  toHarmony,
} from '../lib/index.js';
import { renderConversationForCompletion } from '../lib/chat/harmony/index.js';
import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

let model: Model;
beforeAll(async () => {
  const dir = tinyRealVocabCheckpoint(5, { window: 8 });
  model = await loadModel(dir);
});
afterAll(() => model?.dispose());

const tok = () => getTokenizer();
const harmonyTokens = (text: string) => tok().encode(text, { allowedSpecial: 'all' });

describe('model.chat', () => {
  it('streams events ending with done, and result() agrees with them', async () => {
    const gen = model.chat([{ role: 'user', content: 'Hello!' }], { maxTokens: 12, seed: 1 });
    const events = [];
    for await (const ev of gen) events.push(ev);
    const done = events.at(-1)!;
    expect(done.type).toBe('done');
    expect(events.filter((e) => e.type === 'done')).toHaveLength(1);
    const r = await gen.result();
    expect(r.usage.completionTokens).toBe(12);
    expect(r.usage.totalTokens).toBe(r.usage.promptTokens + 12);
    expect(r.finishReason).toBe('length');
    const text = events.map((e) => (e.type === 'text' ? e.delta : '')).join('');
    expect(r.text).toBe(text);
    expect(r.message.role).toBe('assistant');
    expect(model.sessionCount).toBe(0); // the call's session was freed
  });

  it('the same seed gives the same answer; temperature 0 is deterministic too', async () => {
    const run = (o: object) => model.chat([{ role: 'user', content: 'Hi' }], { maxTokens: 8, ...o }).result();
    expect((await run({ seed: 7 })).text).toBe((await run({ seed: 7 })).text);
    expect((await run({ temperature: 0 })).text).toBe((await run({ temperature: 0, seed: 99 })).text);
  });

  it('stops on <|return|> as the format says', async () => {
    const r = await model
      .chat([{ role: 'user', content: 'Hi' }], { maxTokens: 50, logitBias: { 200002: 100 } })
      .result();
    expect(r.finishReason).toBe('stop');
    expect(r.usage.completionTokens).toBe(1);
  });

  it('an AbortSignal stops generation within a step, frees the session, and the model stays usable', async () => {
    const ac = new AbortController();
    // A random model rarely closes a Harmony header, so its text arrives at the end: abort by time.
    const gen = model.chat([{ role: 'user', content: 'Tell me a story' }], {
      maxTokens: 100000,
      maxContext: 100000,
      signal: ac.signal,
      seed: 3,
    });
    const t0 = performance.now();
    setTimeout(() => ac.abort(), 300);
    await expect(gen.result()).rejects.toThrow(AbortedError);
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(model.sessionCount).toBe(0);
    expect(
      (await model.chat([{ role: 'user', content: 'again' }], { maxTokens: 2 }).result()).usage.completionTokens,
    ).toBe(2);
  });

  it('typed errors for bad requests, and the model stays usable', async () => {
    const bad = [
      [() => model.chat([], {}), InvalidArgumentError],
      [
        () => model.chat([{ role: 'tool', name: 'nope', content: '{}' }], { tools: [{ name: 'get_weather' }] }),
        /unknown tool "nope"/,
      ],
      [
        () => model.chat([{ role: 'assistant', toolCalls: [{ name: 'ghost', arguments: '{}' }] }]),
        /unknown tool "ghost"/,
      ],
      [() => model.chat([{ role: 'user', content: 'x' }], { reasoningEffort: 'max' as never }), /reasoningEffort/],
      [() => model.chat([{ role: 'user', content: 'x' }], { temprature: 1 } as never), /did you mean "temperature"/],
    ] as const;
    for (const [f, err] of bad) expect(f).toThrow(err as never);
    await expect(
      model.chat([{ role: 'user', content: 'long '.repeat(300) }], { maxContext: 64 }).result(),
    ).rejects.toThrow(ContextOverflowError);
    await expect(model.complete([5, 201088]).result()).rejects.toThrow(/prompt token 201088 at index 1/);
    expect(model.sessionCount).toBe(0);
    expect(
      (await model.chat([{ role: 'user', content: 'ok' }], { maxTokens: 1 }).result()).usage.completionTokens,
    ).toBe(1);
  });
});

describe('model.complete', () => {
  it('completes a raw Harmony prompt, recognising its special tokens, with per-token logprobs', async () => {
    const events = [];
    for await (const ev of model.complete('<|start|>user<|message|>hi<|end|><|start|>assistant', {
      maxTokens: 6,
      seed: 2,
    }))
      events.push(ev);
    const tokens = events.filter((e) => e.type === 'token');
    expect(tokens).toHaveLength(6);
    for (const t of tokens) expect(t.type === 'token' && t.logprob <= 0).toBe(true);
    const done = events.at(-1)!;
    expect(done.type === 'done' && done.usage.promptTokens).toBe(
      harmonyTokens('<|start|>user<|message|>hi<|end|><|start|>assistant').length,
    );
  });

  it('stops on the given stop tokens', async () => {
    const r = await model.complete([1, 2, 3], { stopTokens: [42], logitBias: { 42: 100 }, maxTokens: 10 }).result();
    expect(r.finishReason).toBe('stop');
    expect(r.tokens).toEqual([42]);
  });
});

describe('prefill progress', () => {
  it('onPrefillProgress reports each step of a long prompt up to its length; the session holds only prompt + answer', async () => {
    const calls: [number, number][] = [];
    const sizes: (number | undefined)[] = [];
    const create = model.createSession.bind(model);
    model.createSession = (o) => (sizes.push(o?.maxContext), create(o));
    try {
      const r = await model
        .chat([{ role: 'user', content: 'word '.repeat(400) }], {
          maxTokens: 3,
          maxContext: 100_000,
          onPrefillProgress: (done, total) => void calls.push([done, total]),
        })
        .result();
      const P = r.usage.promptTokens;
      expect(P).toBeGreaterThan(400);
      expect(calls).toEqual(Array.from({ length: Math.ceil(P / 128) }, (_, k) => [Math.min(P, (k + 1) * 128), P]));
      expect(sizes).toEqual([P + 3]); // not the 100,000 positions the call may use
    } finally {
      delete (model as { createSession?: unknown }).createSession;
    }
    await expect(
      model.chat([{ role: 'user', content: 'x' }], { onPrefillProgress: 1 as never }).result(),
    ).rejects.toThrow(InvalidArgumentError);
  });

  it('an engine reports it too, from its batch steps', async () => {
    const { createEngine } = await import('../lib/index.js');
    const engine = await createEngine({ model, maxSequences: 2, maxBatchTokens: 64 });
    try {
      const calls: number[] = [];
      const r = await engine
        .complete(
          Array.from({ length: 200 }, (_, i) => 1000 + i),
          {
            maxTokens: 2,
            onPrefillProgress: (done, total) => {
              expect(total).toBe(200);
              calls.push(done);
            },
          },
        )
        .result();
      expect(r.usage.promptTokens).toBe(200);
      expect(calls).toEqual([64, 128, 192, 200]);
    } finally {
      await engine.close();
    }
  });
});

describe('ChatStream (scripted assistant turns)', () => {
  const feed = (text: string, stops: string[] = []) => {
    const s = new ChatStream(stops);
    const events = harmonyTokens(text).flatMap((t) => s.push(t));
    return { s, events: [...events, ...s.end()] };
  };

  it('maps analysis to reasoning and final to text, ending on <|return|>', () => {
    const { s, events } = feed(
      '<|channel|>analysis<|message|>Think first.<|end|><|start|>assistant<|channel|>final<|message|>Paris.<|return|>',
    );
    expect(s.finishReason).toBe('stop');
    expect(s.result.reasoning).toBe('Think first.');
    expect(s.result.text).toBe('Paris.');
    expect(events.map((e) => e.type)).toContain('reasoning');
  });

  it('turns a function call into a tool-call event with parsed JSON arguments and ends on <|call|>', () => {
    const { s, events } = feed(
      '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Tokyo"}<|call|>',
    );
    expect(s.finishReason).toBe('tool-calls');
    const call = events.find((e) => e.type === 'tool-call');
    expect(call).toMatchObject({ name: 'get_weather', arguments: { city: 'Tokyo' }, rawArguments: '{"city":"Tokyo"}' });
  });

  it('malformed tool arguments from the model raise HarmonyError naming the tool', () => {
    expect(() => feed('<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":<|call|>')).toThrow(
      HarmonyError,
    );
    expect(() => feed('<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":<|call|>')).toThrow(
      /called f/,
    );
  });

  it('cuts the answer at a stop string, even one split across tokens', () => {
    const { s } = feed('<|channel|>final<|message|>one two STOP three<|return|>', ['STOP']);
    expect(s.result.text).toBe('one two ');
    expect(s.finishReason).toBe('stop');
  });

  it('text without any header (a refusal) still reads as the answer when the turn is cut short', () => {
    const { s } = feed('I cannot help with that.');
    expect(s.result.text).toBe('I cannot help with that.');
  });
});

describe('toHarmony', () => {
  it('renders effort, date, instructions and function tools the way the format expects', () => {
    const msgs = toHarmony(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Weather?' },
        {
          role: 'assistant',
          reasoning: 'call it',
          toolCalls: [{ id: 'c1', name: 'get_weather', arguments: { city: 'Oslo' } }],
        },
        { role: 'tool', toolCallId: 'c1', content: '{"temp":3}' },
      ],
      {
        reasoningEffort: 'high',
        currentDate: '2025-08-05',
        tools: [
          {
            name: 'get_weather',
            description: 'Weather now.',
            parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
          },
        ],
      },
    );
    const text = tok().decode(renderConversationForCompletion(msgs));
    expect(text).toContain('Current date: 2025-08-05\n\nReasoning: high');
    expect(text).toContain("Calls to these tools must go to the commentary channel: 'functions'.");
    expect(text).toContain('# Instructions\n\nBe brief.');
    expect(text).toContain('type get_weather = (_: {\ncity: string,\n}) => any;');
    expect(text).toContain(
      '<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city":"Oslo"}<|call|>',
    );
    expect(text).toContain(
      '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temp":3}<|end|>',
    );
    expect(text.endsWith('<|start|>assistant')).toBe(true);
  });
});

describe('text held back for stop strings', () => {
  it('a turn ending on <|return|> keeps text that only looked like the start of a stop string', () => {
    const s = new ChatStream(['END']);
    for (const t of harmonyTokens('<|channel|>final<|message|>Hello EN<|return|>')) s.push(t);
    s.end();
    expect(s.result.text).toBe('Hello EN');
  });

  it('a completion cut by maxTokens streams the held-back tail, so the events add up to the text', async () => {
    const plain = await model.complete([7, 8, 9], { maxTokens: 6, temperature: 0, stopTokens: [] }).result();
    const last = getTokenizer().decode([plain.tokens.at(-1)!]);
    const gen = model.complete([7, 8, 9], { maxTokens: 6, temperature: 0, stopTokens: [], stop: [`${last}QQQ`] });
    let streamed = '';
    for await (const ev of gen) if (ev.type === 'token' || ev.type === 'text') streamed += ev.text;
    const r = await gen.result();
    expect(r.text).toBe(plain.text);
    expect(streamed).toBe(plain.text);
  });
});

describe('logprobs', () => {
  it("are the model's own log-softmax, checked against the logits of the same tokens", async () => {
    const prompt = [11, 22, 33, 44];
    const r = await model.complete(prompt, { maxTokens: 6, temperature: 0, stopTokens: [], logprobs: 3 }).result();
    expect(r.logprobs).toHaveLength(6);
    // The logits of every position of prompt + answer, by a plain forward pass.
    const s = model.createSession();
    const all = [...prompt, ...r.tokens];
    const logits = await s.forward(all.slice(0, -1));
    s.dispose();
    const V = 201088;
    r.logprobs!.forEach((lp, i) => {
      const row = logits.subarray((prompt.length - 1 + i) * V, (prompt.length + i) * V);
      let m = -Infinity;
      for (const x of row) m = Math.max(m, x);
      let z = 0;
      for (const x of row) z += Math.exp(x - m);
      const want = row[r.tokens[i]] - m - Math.log(z);
      expect(Math.abs(lp.logprob - want)).toBeLessThan(1e-4);
      expect(lp.top).toHaveLength(3);
      expect(lp.top[0].token).toBe(r.tokens[i]); // greedy: the chosen token is the most likely
      expect(lp.top[0].logprob).toBeCloseTo(lp.logprob, 6);
      expect(lp.top[1].logprob).toBeLessThanOrEqual(lp.top[0].logprob);
      expect(lp.bytes.length).toBeGreaterThan(0);
    });
  });

  it('in chat, only the answer (final channel) tokens carry logprobs', () => {
    const s = new ChatStream();
    const flags = harmonyTokens(
      '<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Hi there<|return|>',
    ).map((t) => {
      s.push(t);
      return s.lastWasAnswer;
    });
    expect(flags.filter(Boolean)).toHaveLength(harmonyTokens('Hi there').length);
  });
});

describe('reasoning token count', () => {
  it('counts the analysis channel content tokens', () => {
    const s = new ChatStream();
    for (const t of harmonyTokens(
      '<|channel|>analysis<|message|>think hard<|end|><|start|>assistant<|channel|>final<|message|>Hi<|return|>',
    ))
      s.push(t);
    expect(s.reasoningTokens).toBe(harmonyTokens('think hard').length);
  });
});
