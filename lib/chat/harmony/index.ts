// The Harmony chat format for gpt-oss (kernels/MODEL.md, "Harmony"): message types, rendering to
// tokens, parsing completions (whole or streamed), and the stop-token sets.
import { HarmonyError } from '../../errors.js';
import { checkKeys } from '../../options.js';
import { getTokenizer, SPECIAL_TOKENS, TOKENS } from '../tokenizer.js';

export * from './types.js';
export { jsonSchemaToTypeScript } from './schema.js';
export {
  renderConversation,
  renderConversationForCompletion,
  renderConversationForCompletionAsync,
  renderConversationForTraining,
  renderMessage,
  toolsSection,
  type RenderConversationConfig,
} from './render.js';
export {
  parseMessagesFromCompletionTokens,
  StreamableParser,
  type HarmonyStreamEvent,
  type MessageTerminator,
  type ParseOptions,
  type ParserState,
} from './parse.js';

/** Tokens that end a message: `<|return|>`, `<|end|>`, `<|call|>` (HAR registry.rs). */
export function stopTokens(): number[] {
  return [TOKENS.return, TOKENS.end, TOKENS.call];
}

/**
 * Tokens on which to stop sampling an assistant turn: `<|return|>` and `<|call|>`. Not `<|end|>`:
 * a turn holds several messages (analysis, then final), each closed by `<|end|>` (kernels/MODEL.md,
 * "Harmony completion").
 */
export function stopTokensForAssistantActions(): number[] {
  return [TOKENS.return, TOKENS.call];
}

export interface EncodeTextOptions {
  /** Special-token spellings to turn into special tokens: 'all' or a list. Default none. */
  allowedSpecial?: 'all' | readonly string[];
  /**
   * Special-token spellings that are an error if found in the text and not allowed: 'all' (the
   * default) or a list. `[]` encodes them as ordinary text.
   */
  disallowedSpecial?: 'all' | readonly string[];
}

/**
 * Encodes text as the official `HarmonyEncoding.encode` does (tiktoken's guard): by default the
 * spelling of a special token in the text is an error rather than silently becoming either the
 * special token or ordinary text. For untrusted text that must stay text, pass
 * `disallowedSpecial: []`, or use the tokenizer directly (its default).
 */
export function encodeText(text: string, options: EncodeTextOptions = {}): number[] {
  checkKeys(options, ['allowedSpecial', 'disallowedSpecial'], 'encodeText');
  const allowed = options.allowedSpecial ?? [];
  const disallowed = options.disallowedSpecial ?? 'all';
  const tok = getTokenizer();
  if (allowed !== 'all') {
    const names = disallowed === 'all' ? Object.keys(SPECIAL_TOKENS) : disallowed;
    for (const name of names) {
      if (!allowed.includes(name) && text.includes(name))
        throw new HarmonyError(`Encountered text corresponding to disallowed special token ${JSON.stringify(name)}`);
    }
    // <|reserved_200014|>…<|reserved_201088|> are specials too: match the pattern, not 1075 names.
    if (disallowed === 'all') {
      for (const m of text.matchAll(/<\|reserved_(\d+)\|>/g)) {
        const id = Number(m[1]);
        if (id >= 200014 && id <= 201088 && !allowed.includes(m[0]))
          throw new HarmonyError(`Encountered text corresponding to disallowed special token ${JSON.stringify(m[0])}`);
      }
    }
  }
  return tok.encode(text, { allowedSpecial: allowed });
}
