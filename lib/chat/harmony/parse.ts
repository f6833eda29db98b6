// Harmony parsing: completion tokens → messages, whole or token by token (kernels/MODEL.md,
// "Harmony completion"; test/fixtures/harmony/RULES.md §10). One state machine serves both, so
// streaming and non-streaming callers see the same messages. It follows HAR's StreamableParser (encoding.rs) in
// what it accepts and in its error texts, and adds events for streaming consumers.
//
// Tolerance (what the model really emits, not only what the renderer writes): the recipient may
// come before or after the channel, `<|constrain|>` may follow a word with no space, a content type
// may be a bare word (`json`, `code`), and with `strict: false` a stop token that arrives while a
// header is still open turns the header text into the message (120b refusals without a header).
import { HarmonyError, InvalidArgumentError } from '../../errors.js';
import { checkKeys } from '../../options.js';
import { getTokenizer, TOKENS } from '../tokenizer.js';
import type { HarmonyMessage, Role } from './types.js';
import { isRole } from './types.js';

export type ParserState = 'ExpectStart' | 'Header' | 'Content';

/** Why a message ended: its stop token, or the end of the stream (`processEos`). */
export type MessageTerminator = 'end' | 'return' | 'call' | 'eos';

export type HarmonyStreamEvent =
  | {
      type: 'message-start';
      role: Role;
      name: string | null;
      channel: string | null;
      recipient: string | null;
      contentType: string | null;
    }
  /** Text as it arrives; never half a UTF-8 character. The deltas of a message join to its text. */
  | { type: 'content-delta'; delta: string; channel: string | null; recipient: string | null }
  | { type: 'message-end'; message: HarmonyMessage; terminator: MessageTerminator };

export interface ParseOptions {
  /** Default true. False accepts a message whose header never reached `<|message|>`. */
  strict?: boolean;
}

interface ParsedHeader {
  role: Role;
  name: string | null;
  recipient: string | null;
  channel: string | null;
  contentType: string | null;
}

/** The tokens that close a message (HAR registry.rs stop_formatting_tokens). */
const STOP_TOKENS = new Map<number, MessageTerminator>([
  [TOKENS.end, 'end'],
  [TOKENS.return, 'return'],
  [TOKENS.call, 'call'],
]);

const CHANNEL = '<|channel|>';
const CONSTRAIN = '<|constrain|>';
const REPLACEMENT = '\uFFFD';
// ignoreBOM: a U+FEFF at the start of a chunk is content, not a byte-order mark to swallow.
const lossyUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * How much of `bytes` is valid UTF-8, as Rust's Utf8Error reports it: `errorLen` is the length of
 * the invalid sequence at `validUpTo` (its maximal valid prefix, at least 1), or null when the
 * bytes merely stop inside a character (more may come).
 */
function scanUtf8(bytes: Uint8Array): { validUpTo: number; errorLen: number | null } {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    // Allowed range of the second byte; excludes overlongs (E0, F0), surrogates (ED), > U+10FFFF (F4).
    let lo = 0x80,
      hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return { validUpTo: i, errorLen: 1 };
    for (let k = 1; k <= need; k++) {
      if (i + k >= bytes.length) return { validUpTo: i, errorLen: null };
      const c = bytes[i + k];
      if (c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return { validUpTo: i, errorLen: k };
    }
    i += need + 1;
  }
  return { validUpTo: bytes.length, errorLen: null };
}

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Rust's split_ascii_whitespace. */
function splitAsciiWhitespace(s: string): string[] {
  return s.split(/[ \t\n\f\r]+/).filter((p) => p.length > 0);
}

/**
 * Reads a decoded header. Returns the header and, when `parseRecipientAndType` is false or words
 * are left over, the words not accounted for (joined by single spaces).
 */
function parseHeaderText(
  text: string,
  role: Role | null,
  parseRecipientAndType: boolean,
): { header: ParsedHeader; rest: string | null } {
  // The channel can sit anywhere in the header (before or after ` to=…`), so cut it out first.
  let channel: string | null = null;
  const at = text.indexOf(CHANNEL);
  if (at >= 0) {
    const after = text.slice(at + CHANNEL.length);
    const end = after.search(/[\s<]/);
    const value = end < 0 ? after : after.slice(0, end);
    if (value.length === 0) throw new HarmonyError('channel marker present but no channel value found in header');
    channel = value;
    text = text.slice(0, at) + after.slice(value.length);
  }
  text = text.trim();
  // `to=x<|constrain|>json` and `commentary<|constrain|>json`: split the content type off.
  if (text.includes(CONSTRAIN)) text = text.replaceAll(CONSTRAIN, ` ${CONSTRAIN}`).trim();
  const parts = splitAsciiWhitespace(text);

  let roleWord: string | null = null;
  if (role === null) {
    if (parts.length === 0) throw new HarmonyError('message header did not contain a role');
    roleWord = parts[0];
    if (isRole(roleWord)) role = roleWord;
    else if (parts.length > 1 || roleWord.startsWith('to=')) {
      // An unknown author with a recipient or more header words is a tool replying (`browser.search to=assistant`).
      parts.shift();
      role = 'tool';
    } else throw new HarmonyError(`Unknown role: ${roleWord}`);
  }
  if (parts[0] === role) parts.shift();

  let recipient: string | null = null;
  let contentType: string | null = null;
  if (parseRecipientAndType && parts.length > 0) {
    const count = parts.length;
    const last = parts.pop() as string;
    if (last.startsWith('to=')) recipient = last.slice(3);
    else if (count === 1 && !last.startsWith(CONSTRAIN)) recipient = last;
    else {
      contentType = last;
      const raw = parts.pop();
      if (raw !== undefined) recipient = raw.startsWith('to=') ? raw.slice(3) : raw;
    }
  }
  return {
    header: { role, name: role === 'tool' ? roleWord : null, recipient, channel, contentType },
    rest: parts.length > 0 ? parts.join(' ') : null,
  };
}

function toMessage(h: ParsedHeader, text: string): HarmonyMessage {
  return {
    role: h.role,
    name: h.name,
    recipient: h.recipient,
    channel: h.channel,
    content_type: h.contentType,
    content: [{ type: 'text', text }],
  };
}

/**
 * Parses model output token by token. Created with a role (usually 'assistant', because the prompt
 * ends with `<|start|>assistant`), it starts inside that message's header; without one it expects
 * `<|start|>` first. Errors are HarmonyError with HAR's wording.
 */
export class StreamableParser {
  readonly #tok = getTokenizer();
  readonly #strict: boolean;
  /** The role given at construction; it applies to the first header only. */
  #nextRole: Role | null;
  #state: ParserState;
  #headerTokens: number[] = [];
  #header: ParsedHeader | null = null;
  /** Text emitted so far for the current message. */
  #content = '';
  /** Tokens with no bytes (ids outside the vocabulary); they hold back everything after them. */
  #pendingTokens: number[] = [];
  /** Bytes not yet emitted: an unfinished character, or what follows an invalid sequence. */
  #pendingBytes: Uint8Array = new Uint8Array(0);
  #lastContentDelta: string | null = null;
  readonly #tokens: number[] = [];
  readonly #messages: HarmonyMessage[] = [];

  constructor(role: Role | null = null, options: ParseOptions = {}) {
    if (role !== null && !isRole(role))
      throw new InvalidArgumentError(
        `role: expected null or one of system, developer, user, assistant, tool; got ${JSON.stringify(role)}`,
      );
    checkKeys(options, ['strict'], 'StreamableParser options');
    if (options.strict !== undefined && typeof options.strict !== 'boolean')
      throw new InvalidArgumentError(
        `StreamableParser options: strict must be a boolean, got ${JSON.stringify(options.strict)}`,
      );
    this.#strict = options.strict ?? true;
    this.#nextRole = role;
    this.#state = role === null ? 'ExpectStart' : 'Header';
  }

  /** Feeds one token; returns what it completed. */
  process(token: number): HarmonyStreamEvent[] {
    if (!Number.isInteger(token) || token < 0 || token > 0xffffffff)
      throw new InvalidArgumentError(`process(token): expected a token id (an integer from 0 to 2^32-1); got ${token}`);
    this.#tokens.push(token);
    switch (this.#state) {
      case 'ExpectStart':
        if (token !== TOKENS.start)
          throw new HarmonyError(`Unexpected token ${token} while expecting start token ${TOKENS.start}`);
        this.#state = 'Header';
        this.#headerTokens = [];
        return [];
      case 'Header':
        if (token === TOKENS.message) return this.#openContent();
        if (!this.#strict && STOP_TOKENS.has(token))
          return this.#closeHeaderOnly(STOP_TOKENS.get(token) as MessageTerminator);
        // Strict: a stop token here is header text, and the header fails at `<|message|>` or EOS.
        this.#headerTokens.push(token);
        return [];
      case 'Content': {
        const terminator = STOP_TOKENS.get(token);
        return terminator ? this.#closeMessage(terminator) : this.#pushContent(token);
      }
    }
  }

  /** Signals the end of the stream (sampling stopped): completes a message in progress. */
  processEos(): HarmonyStreamEvent[] {
    switch (this.#state) {
      case 'ExpectStart':
        return [];
      case 'Header':
        // Non-strict: as for a stop token inside a header, the header text is the message.
        if (!this.#strict) return this.#closeHeaderOnly('eos');
        throw new HarmonyError('Unexpected EOS while waiting for message header to complete');
      case 'Content':
        return this.#closeMessage('eos');
    }
  }

  /** Completed messages, in order. */
  get messages(): readonly HarmonyMessage[] {
    return this.#messages;
  }

  get state(): ParserState {
    return this.#state;
  }

  /** The current message's role once its header is read; before that, the role given at construction. */
  get currentRole(): Role | null {
    return this.#header?.role ?? this.#nextRole;
  }

  get currentChannel(): string | null {
    return this.#header?.channel ?? null;
  }

  get currentRecipient(): string | null {
    return this.#header?.recipient ?? null;
  }

  get currentContentType(): string | null {
    return this.#header?.contentType ?? null;
  }

  /** Text emitted so far for the message being read ('' outside a message body). */
  get currentContent(): string {
    return this.#content;
  }

  /** Text emitted by the latest token, or null if it emitted none (HAR's last_content_delta). */
  get lastContentDelta(): string | null {
    return this.#lastContentDelta;
  }

  /** Every token fed so far. */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  #openContent(): HarmonyStreamEvent[] {
    const tokens = this.#headerTokens;
    const role = this.#nextRole;
    this.#headerTokens = [];
    // If the header is rejected the parser waits for a new `<|start|>`, as HAR's does.
    this.#state = 'ExpectStart';
    const { header, rest } = parseHeaderText(this.#decodeHeader(tokens), role, true);
    if (rest !== null) throw new HarmonyError(`unexpected tokens remaining in message header: ${JSON.stringify(rest)}`);
    this.#nextRole = null;
    this.#header = header;
    this.#state = 'Content';
    return [
      {
        type: 'message-start',
        role: header.role,
        name: header.name,
        channel: header.channel,
        recipient: header.recipient,
        contentType: header.contentType,
      },
    ];
  }

  /**
   * Non-strict mode, stop token inside a header: the header text (minus a channel) is the message.
   * Only the first message of a parser created with a role qualifies; otherwise there is no role
   * to give it, and the fragment is dropped.
   */
  #closeHeaderOnly(terminator: MessageTerminator): HarmonyStreamEvent[] {
    const tokens = this.#headerTokens;
    const role = this.#nextRole;
    this.#headerTokens = [];
    this.#state = 'ExpectStart';
    this.#nextRole = null;
    if (role === null || tokens.length === 0) return [];
    // The "header" here is really the message text (a refusal with no header), so bytes that are
    // not UTF-8 become U+FFFD as content would, rather than failing the whole turn.
    const { header, rest } = parseHeaderText(this.#tok.decode(tokens), role, false);
    const text = rest ?? '';
    const message = toMessage(header, text);
    this.#messages.push(message);
    const events: HarmonyStreamEvent[] = [
      {
        type: 'message-start',
        role: header.role,
        name: header.name,
        channel: header.channel,
        recipient: null,
        contentType: null,
      },
    ];
    if (text.length > 0) events.push({ type: 'content-delta', delta: text, channel: header.channel, recipient: null });
    events.push({ type: 'message-end', message, terminator });
    return events;
  }

  #decodeHeader(tokens: readonly number[]): string {
    try {
      return this.#tok.decodeUtf8(tokens);
    } catch (e) {
      throw new HarmonyError(`could not decode header: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }

  /**
   * Emits the longest valid UTF-8 prefix of the pending bytes, then at most one U+FFFD for an
   * invalid sequence right after it; the rest waits for the next token. Handling one error per
   * token is HAR's behaviour, and the fixtures pin the resulting lag (RULES.md §10).
   */
  #pushContent(token: number): HarmonyStreamEvent[] {
    this.#pendingTokens.push(token);
    let bytes: Uint8Array;
    try {
      bytes = this.#tok.decodeBytes(this.#pendingTokens);
    } catch {
      this.#lastContentDelta = null;
      return [];
    }
    this.#pendingTokens = [];
    const buf = concatBytes(this.#pendingBytes, bytes);
    const { validUpTo, errorLen } = scanUtf8(buf);
    let delta = validUpTo > 0 ? lossyUtf8.decode(buf.subarray(0, validUpTo)) : '';
    let used = validUpTo;
    if (errorLen !== null) {
      delta += REPLACEMENT;
      used += errorLen;
    }
    this.#pendingBytes = buf.slice(used);
    this.#lastContentDelta = validUpTo === buf.length || delta.length > 0 ? delta : null;
    if (delta.length === 0) return [];
    this.#content += delta;
    const h = this.#header as ParsedHeader;
    return [{ type: 'content-delta', delta, channel: h.channel, recipient: h.recipient }];
  }

  /** Ends the message; whatever is still pending becomes text (U+FFFD where it cannot). */
  #closeMessage(terminator: MessageTerminator): HarmonyStreamEvent[] {
    const h = this.#header as ParsedHeader;
    let rest = '';
    if (this.#pendingTokens.length > 0) {
      try {
        rest = this.#tok.decodeUtf8(this.#pendingTokens);
      } catch {
        rest = REPLACEMENT;
      }
    }
    rest += lossyUtf8.decode(this.#pendingBytes);
    const message = toMessage(h, this.#content + rest);
    this.#messages.push(message);
    this.#state = 'ExpectStart';
    this.#header = null;
    this.#content = '';
    this.#pendingTokens = [];
    this.#pendingBytes = new Uint8Array(0);
    this.#lastContentDelta = null;
    const events: HarmonyStreamEvent[] = [];
    if (rest.length > 0)
      events.push({ type: 'content-delta', delta: rest, channel: h.channel, recipient: h.recipient });
    events.push({ type: 'message-end', message, terminator });
    return events;
  }
}

/**
 * Parses a whole completion (kernels/MODEL.md, "Harmony completion"). `role` is the role the prompt
 * already opened ('assistant' after `<|start|>assistant`); null when the tokens start with
 * `<|start|>`.
 */
export function parseMessagesFromCompletionTokens(
  tokens: ArrayLike<number>,
  role: Role | null = null,
  options: ParseOptions = {},
): HarmonyMessage[] {
  if (tokens == null || typeof tokens.length !== 'number')
    throw new InvalidArgumentError('tokens: expected an array of token ids');
  const parser = new StreamableParser(role, options);
  for (let i = 0; i < tokens.length; i++) parser.process(tokens[i]);
  parser.processEos();
  return [...parser.messages];
}
