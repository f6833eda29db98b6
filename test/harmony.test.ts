// Harmony render/parse against every case in fixtures/harmony/cases.json (transcribed from the
// official openai/harmony tests; RULES.md explains each field), plus our own streaming checks.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { HarmonyError, InvalidArgumentError } from '../lib/errors.js';
import {
  encodeText,
  parseMessagesFromCompletionTokens,
  renderConversation,
  renderConversationForCompletion,
  renderConversationForTraining,
  renderMessage,
  StreamableParser,
  stopTokens,
  stopTokensForAssistantActions,
  textMessage,
  type HarmonyMessage,
  type HarmonyStreamEvent,
  type RenderConversationConfig,
  type Role,
} from '../lib/chat/harmony/index.js';
import { getTokenizer } from '../lib/chat/tokenizer.js';

// The fixture is JSON; each kind's fields are read through these loose shapes.
interface Case {
  id: string;
  kind: string;
  input: Record<string, unknown>;
  expected_text?: string;
  expected_text_compare?: 'trim_end';
  expected_tokens?: number[];
  expected_messages?: HarmonyMessage[];
  expected_error?: { message_contains: string };
  [key: string]: unknown;
}

const cases = JSON.parse(
  readFileSync(join(import.meta.dirname, 'fixtures', 'harmony', 'cases.json'), 'utf8'),
) as Case[];
const tok = getTokenizer();

const KINDS = [
  'render_for_completion',
  'render',
  'render_for_training',
  'render_message',
  'render_roundtrip',
  'parse',
  'parse_and_render',
  'stream_parse',
  'tokenizer',
  'stop_tokens',
];

/** Trailing whitespace stripped, as the official tests compare test-data files (RULES.md §1). */
function expectedText(text: string, compare: string | undefined): string {
  return compare === 'trim_end' ? text.trimEnd() : text;
}

function renderConfig(raw: unknown): RenderConversationConfig | undefined {
  if (raw == null) return undefined;
  return { autoDropAnalysis: (raw as { auto_drop_analysis: boolean }).auto_drop_analysis };
}

function role(raw: unknown): Role | null {
  return (raw ?? null) as Role | null;
}

/** Asserts `fn` throws a HarmonyError whose message contains the case's expected text. */
function expectHarmonyError(fn: () => unknown, contains: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown, 'expected an error').toBeInstanceOf(HarmonyError);
  expect((thrown as Error).message).toContain(contains);
  expect((thrown as HarmonyError).code).toBe('ERR_INVALID_ARGUMENT');
}

/** Evaluates the token expressions used in `also_asserted`, e.g. `[9552] + encode(' interesting')`. */
function tokenExpression(expr: string): number[] {
  return expr.split(' + ').flatMap((term) => {
    const enc = /^encode\('(.*)'\)$/.exec(term.trim());
    return enc ? tok.encode(enc[1]) : (JSON.parse(term) as number[]);
  });
}

function runRenderForCompletion(c: Case): void {
  const input = c.input as { messages: HarmonyMessage[]; next_turn_role: Role; render_config: unknown };
  const tokens = renderConversationForCompletion(
    input.messages,
    input.next_turn_role,
    renderConfig(input.render_config),
  );
  const text = expectedText(c.expected_text as string, c.expected_text_compare);
  expect(tok.decodeUtf8(tokens)).toBe(text);
  // Where the official test compares only text, RULES.md §2 still pins the tokens: rendering piece
  // by piece equals encoding the whole text with all specials allowed for every fixture.
  expect(tokens).toEqual(c.expected_tokens ?? tok.encode(text, { allowedSpecial: 'all' }));
}

function runRenderMessage(c: Case): void {
  const message = (c.input as { message: HarmonyMessage }).message;
  const tokens = renderMessage(message);
  expect(tokens.at(-1)).toBe(c.expected_last_token);
  const withoutLast = tokens.slice(0, -1);
  expect(tok.decodeUtf8(withoutLast)).toBe(
    expectedText(c.expected_text_without_last_token as string, c.expected_text_compare),
  );
  const parse = c.expected_parse_of_tokens_without_last as {
    role: unknown;
    strict: boolean;
    expected_message_count: number;
  };
  expect(parseMessagesFromCompletionTokens(withoutLast, role(parse.role), { strict: parse.strict })).toHaveLength(
    parse.expected_message_count,
  );
}

function runRenderRoundtrip(c: Case): void {
  const input = c.input as { message: HarmonyMessage; render_config: unknown; next_turn_role: Role };
  const config = renderConfig(input.render_config);
  const single = renderMessage(input.message);
  const conversation = renderConversation([input.message], config);
  const completion = renderConversationForCompletion([input.message], input.next_turn_role, config);
  expect(c.assertions).toEqual([
    'render(message) == render_conversation([message])',
    'render_conversation_for_completion([message], assistant) starts with render_conversation([message])',
  ]);
  expect(single).toEqual(conversation);
  expect(completion.slice(0, conversation.length)).toEqual(conversation);
  const derived = c.derived_expected_tokens as { render: number[]; render_conversation_for_completion: number[] };
  expect(single).toEqual(derived.render);
  expect(completion).toEqual(derived.render_conversation_for_completion);
}

function runRenderForTraining(c: Case): void {
  const input = c.input as { messages: HarmonyMessage[]; render_config: unknown };
  const config = renderConfig(input.render_config);
  const training = renderConversationForTraining(input.messages, config);
  const regular = renderConversation(input.messages, config);
  expect(c.assertions).toEqual(['training == regular']);
  expect(training).toEqual(regular);
  const derived = c.derived_expected_tokens as {
    render_conversation: number[];
    render_conversation_for_training: number[];
  };
  expect(regular).toEqual(derived.render_conversation);
  expect(training).toEqual(derived.render_conversation_for_training);
}

function runParse(c: Case): void {
  const input = c.input as { tokens: number[]; role: unknown; strict: boolean; text?: string };
  if (input.text !== undefined) expect(tok.decodeUtf8(input.tokens)).toBe(input.text);
  const parse = () => parseMessagesFromCompletionTokens(input.tokens, role(input.role), { strict: input.strict });
  if (c.expected_error) {
    expectHarmonyError(parse, c.expected_error.message_contains);
    return;
  }
  const messages = parse();
  expect(messages).toEqual(c.expected_messages);
  if (c.kind === 'parse_and_render' && c.expected_render_tokens_equal_input_tokens === true)
    expect(renderConversation(c.expected_messages as HarmonyMessage[])).toEqual(input.tokens);
}

function runStreamParse(c: Case): void {
  const input = c.input as {
    tokens: number[];
    role: unknown;
    strict: boolean;
    process_eos: boolean;
    checkpoints?: { after_tokens: number | 'eos'; last_content_delta?: string | null; current_content?: string }[];
  };
  const parser = new StreamableParser(role(input.role), { strict: input.strict });
  const deltas: (string | null)[] = [];
  const checkpoint = (after: number | 'eos') => {
    for (const cp of input.checkpoints ?? []) {
      if (cp.after_tokens !== after) continue;
      if ('last_content_delta' in cp)
        expect(parser.lastContentDelta, `last_content_delta after ${after}`).toBe(cp.last_content_delta);
      if ('current_content' in cp)
        expect(parser.currentContent, `current_content after ${after}`).toBe(cp.current_content);
    }
  };
  const feed = () => {
    input.tokens.forEach((t, i) => {
      parser.process(t);
      deltas.push(parser.lastContentDelta);
      checkpoint(i + 1);
    });
    if (input.process_eos) {
      parser.processEos();
      checkpoint('eos');
    }
  };
  if (c.expected_error) {
    expectHarmonyError(feed, c.expected_error.message_contains);
    return;
  }
  feed();
  const asserted = [
    'expected_messages',
    'expected_message_count',
    'expected_messages_partial',
    'expected_joined_content_deltas',
  ];
  expect(
    asserted.some((k) => k in c),
    'case asserts something',
  ).toBe(true);
  if (c.expected_messages) expect(parser.messages).toEqual(c.expected_messages);
  if (c.expected_message_count !== undefined) expect(parser.messages).toHaveLength(c.expected_message_count as number);
  if (c.expected_messages_partial) {
    const { index, message } = c.expected_messages_partial as { index: number; message: HarmonyMessage };
    expect(parser.messages[index]).toEqual(message);
  }
  if (c.expected_joined_content_deltas) {
    const { over_first_tokens: n, value } = c.expected_joined_content_deltas as {
      over_first_tokens: number;
      value: string;
    };
    expect(
      deltas
        .slice(0, n)
        .filter((d) => d !== null)
        .join(''),
    ).toBe(value);
  }
  // Not asserted by the official tests, but what the official logic gives (RULES.md §1).
  if (c.derived_messages_not_asserted) expect(parser.messages).toEqual(c.derived_messages_not_asserted);
  if (typeof c.also_asserted === 'string') {
    const m = /decode_utf8\((.*)\) raises/.exec(c.also_asserted);
    expect(m, 'also_asserted is a decode_utf8(...) raises check').not.toBeNull();
    expect(() => tok.decodeUtf8(tokenExpression((m as RegExpExecArray)[1]))).toThrow(/Invalid utf-8/);
  }
}

interface TokenizerCheck {
  op: string;
  text?: string;
  tokens?: number[];
  allowed_special?: 'all' | string[];
  expected_text?: string;
  expected_tokens?: number[];
  expected_tokens_not?: number[];
  expected_tokens_from_other_test?: number[];
  expected_error?: { message_contains: string };
  expected_contains?: string;
  derived_expected_text?: string;
}

function runTokenizerCheck(check: TokenizerCheck): void {
  switch (check.op) {
    case 'decode_utf8':
      if (check.expected_error) {
        expect(() => tok.decodeUtf8(check.tokens as number[])).toThrow(check.expected_error.message_contains);
      } else {
        expect(tok.decodeUtf8(check.tokens as number[])).toBe(check.expected_text);
      }
      return;
    case 'encode': {
      const tokens = tok.encode(check.text as string, { allowedSpecial: check.allowed_special });
      const expected = check.expected_tokens ?? check.expected_tokens_from_other_test;
      if (expected) expect(tokens).toEqual(expected);
      if (check.expected_tokens_not) expect(tokens).not.toEqual(check.expected_tokens_not);
      expect(expected ?? check.expected_tokens_not, 'encode check asserts something').toBeDefined();
      return;
    }
    case 'decode_utf8(encode(text))':
      expect(tok.decodeUtf8(tok.encode(check.text as string))).toBe(check.expected_text);
      return;
    case "encode (python wrapper default: disallowed_special='all')":
      expectHarmonyError(
        () => encodeText(check.text as string),
        (check.expected_error as { message_contains: string }).message_contains,
      );
      return;
    case 'encode (python wrapper, disallowed_special=())':
      expect(encodeText(check.text as string, { disallowedSpecial: [] })).toEqual(check.expected_tokens);
      return;
    case 'decode (lossy, invalid bytes replaced)': {
      const text = tok.decode(check.tokens as number[]);
      expect(text).toContain(check.expected_contains);
      expect(text).toBe(check.derived_expected_text);
      return;
    }
    default:
      throw new Error(`unknown tokenizer check op ${JSON.stringify(check.op)}`);
  }
}

function runCase(c: Case): void {
  switch (c.kind) {
    case 'render_for_completion':
      return runRenderForCompletion(c);
    case 'render_message':
      return runRenderMessage(c);
    case 'render_roundtrip':
      return runRenderRoundtrip(c);
    case 'render_for_training':
      return runRenderForTraining(c);
    case 'parse':
    case 'parse_and_render':
      return runParse(c);
    case 'stream_parse':
      return runStreamParse(c);
    case 'tokenizer':
      for (const check of (c.input as { checks: TokenizerCheck[] }).checks) runTokenizerCheck(check);
      return;
    case 'stop_tokens':
      expect([...stopTokens()].sort()).toEqual(c.expected_stop_tokens);
      expect([...stopTokensForAssistantActions()].sort()).toEqual(c.expected_stop_tokens_for_assistant_actions);
      return;
    default:
      throw new Error(`unknown case kind ${JSON.stringify(c.kind)}`);
  }
}

describe('harmony fixtures (cases.json)', () => {
  it('has the 46 cases, every one of a kind this file runs', () => {
    expect(cases).toHaveLength(46);
    for (const c of cases) expect(KINDS, c.id).toContain(c.kind);
  });

  it.each(cases.map((c) => [`${c.kind}: ${c.id}`, c] as const))('%s', (_name, c) => {
    runCase(c);
  });
});

/** Feeds tokens one at a time, returning the events and the parser. */
function stream(
  tokens: readonly number[],
  roleArg: Role | null,
  eos = true,
): { events: HarmonyStreamEvent[]; parser: StreamableParser } {
  const parser = new StreamableParser(roleArg);
  const events: HarmonyStreamEvent[] = [];
  for (const t of tokens) events.push(...parser.process(t));
  if (eos) events.push(...parser.processEos());
  return { events, parser };
}

describe('harmony streaming', () => {
  const completion = tok.encode(
    '<|channel|>analysis<|message|>Need the weather; call the tool 🌦️.<|end|>' +
      '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Tokyo"}<|call|>' +
      '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"sky":"clear"}<|end|>' +
      '<|start|>assistant<|channel|>final<|message|>Clear skies in Tokyo 😊.<|return|>',
    { allowedSpecial: 'all' },
  );

  it('agrees with the whole-completion parse when fed one token at a time', () => {
    const whole = parseMessagesFromCompletionTokens(completion, 'assistant');
    const { events, parser } = stream(completion, 'assistant');
    expect(whole).toHaveLength(4);
    expect(parser.messages).toEqual(whole);
    expect(parser.tokens).toEqual(completion);
    expect(whole[1]).toMatchObject({
      role: 'assistant',
      channel: 'commentary',
      recipient: 'functions.get_weather',
      content_type: '<|constrain|>json',
    });
    expect(whole[2]).toMatchObject({ role: 'tool', name: 'functions.get_weather', recipient: 'assistant' });

    // Per message: one start, deltas that join to the text, one end naming the stop token.
    const ends = events.filter((e) => e.type === 'message-end');
    expect(ends.map((e) => e.terminator)).toEqual(['end', 'call', 'end', 'return']);
    let text = '';
    const joined: string[] = [];
    for (const e of events) {
      if (e.type === 'message-start') text = '';
      else if (e.type === 'content-delta') text += e.delta;
      else joined.push(text);
    }
    expect(joined).toEqual(whole.map((m) => (m.content[0] as { text: string }).text));
    const starts = events.filter((e) => e.type === 'message-start');
    expect(starts[1]).toEqual({
      type: 'message-start',
      role: 'assistant',
      name: null,
      channel: 'commentary',
      recipient: 'functions.get_weather',
      contentType: '<|constrain|>json',
    });
  });

  it('never puts U+FFFD in a content delta when an emoji is split across tokens', () => {
    const body = tok.encode('Party 🎉🫠 time 👨‍👩‍👧‍👦!');
    // At least one emoji must really be split, or this test proves nothing.
    expect(body.some((t) => tok.decode([t]).includes('\uFFFD'))).toBe(true);
    const tokens = [...tok.encode('<|start|>assistant<|channel|>final<|message|>', { allowedSpecial: 'all' }), ...body];
    const parser = new StreamableParser(null);
    const deltas: string[] = [];
    for (const t of tokens) {
      for (const e of parser.process(t)) if (e.type === 'content-delta') deltas.push(e.delta);
      expect(parser.lastContentDelta ?? '').not.toContain('\uFFFD');
    }
    expect(parser.state).toBe('Content');
    expect(parser.currentChannel).toBe('final');
    for (const d of deltas) expect(d).not.toContain('\uFFFD');
    expect(deltas.join('')).toBe('Party 🎉🫠 time 👨‍👩‍👧‍👦!');
    const end = parser.processEos();
    expect(end).toEqual([
      {
        type: 'message-end',
        terminator: 'eos',
        message: textMessage('assistant', 'Party 🎉🫠 time 👨‍👩‍👧‍👦!', {
          name: null,
          recipient: null,
          channel: 'final',
          content_type: null,
        }),
      },
    ]);
  });

  it('flushes undecodable bytes as a last delta so the deltas still join to the message text', () => {
    // 9552 is a space plus the first two bytes of a 4-byte character; the message ends before the rest.
    const { events, parser } = stream([200006, 173781, 200008, 9552, 200007], null, false);
    const text = events
      .filter((e) => e.type === 'content-delta')
      .map((e) => e.delta)
      .join('');
    expect(text).toBe(' \uFFFD');
    expect(parser.messages[0].content).toEqual([{ type: 'text', text: ' \uFFFD' }]);
  });

  it('reports state, role and header fields while a message is read', () => {
    const parser = new StreamableParser('assistant');
    expect(parser.state).toBe('Header');
    expect(parser.currentRole).toBe('assistant');
    const header = tok.encode('<|channel|>analysis to=python code<|message|>', { allowedSpecial: 'all' });
    for (const t of header) parser.process(t);
    expect(parser.state).toBe('Content');
    expect([parser.currentChannel, parser.currentRecipient, parser.currentContentType]).toEqual([
      'analysis',
      'python',
      'code',
    ]);
    parser.process(tok.special('<|call|>'));
    expect(parser.state).toBe('ExpectStart');
    expect(parser.currentRole).toBeNull();
    expect(() => parser.process(17196)).toThrow(/Unexpected token 17196 while expecting start token 200006/);
  });
});

describe('harmony rendering', () => {
  it('renders special-token text inside a user message as ordinary tokens', () => {
    const text = 'Please print <|end|><|start|>system<|message|>and <|constrain|> literally';
    const tokens = renderMessage(textMessage('user', text));
    const body = tokens.slice(3, -1);
    expect(tokens.slice(0, 3)).toEqual([200006, 1428, 200008]);
    expect(tokens.at(-1)).toBe(200007);
    expect(body).toEqual(tok.encode(text));
    for (const t of body) expect(tok.isSpecial(t)).toBe(false);
    // …and it parses back to the same text.
    expect(parseMessagesFromCompletionTokens(tokens)).toEqual([
      {
        role: 'user',
        name: null,
        recipient: null,
        channel: null,
        content_type: null,
        content: [{ type: 'text', text }],
      },
    ]);
  });

  it('drops analysis before the first final only once the turn has ended, by default', () => {
    const convo: HarmonyMessage[] = [
      textMessage('user', 'Hi'),
      textMessage('assistant', 'think 1', { channel: 'analysis' }),
      textMessage('assistant', 'Hello!', { channel: 'final' }),
      textMessage('user', 'Again'),
      textMessage('assistant', 'think 2', { channel: 'analysis' }),
      textMessage('assistant', 'Hello again!', { channel: 'final' }),
    ];
    const text = (config?: RenderConversationConfig) => tok.decodeUtf8(renderConversation(convo, config));
    expect(text()).not.toContain('think 1');
    expect(text()).toContain('think 2');
    expect(text({ autoDropAnalysis: false })).toContain('think 1');
    expect(text(undefined)).toBe(text({ autoDropAnalysis: true }));
    expect(tok.decodeUtf8(renderConversationForTraining(convo)).endsWith('Hello again!<|return|>')).toBe(true);
  });

  it('rejects a tool message without a name and system content outside a system message', () => {
    expect(() => renderMessage({ role: 'tool', content: [{ type: 'text', text: '{}' }] })).toThrow(HarmonyError);
    expect(() => renderMessage({ role: 'user', content: [{ type: 'system_content' }] })).toThrow(
      /only appear in a system message/,
    );
  });

  it('refuses misspelled options instead of ignoring them', () => {
    const python = { auto_drop_analysis: false } as unknown as RenderConversationConfig;
    expect(() => renderConversation([textMessage('user', 'Hi')], python)).toThrow(
      /unknown option "auto_drop_analysis"/,
    );
    expect(() => new StreamableParser('assistant', { stric: false } as unknown as { strict?: boolean })).toThrow(
      InvalidArgumentError,
    );
  });
});
