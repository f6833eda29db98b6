// Harmony rendering: messages → o200k_harmony tokens (kernels/MODEL.md, "Harmony";
// test/fixtures/harmony/RULES.md §3–8).
// Every piece of text (role words, header text, bodies) is encoded as ordinary text, so a special
// token's spelling typed by a user stays text; framing tokens are inserted by id.
import { HarmonyError, InvalidArgumentError } from '../../errors.js';
import { checkKeys } from '../../options.js';
import { getTokenizer, TOKENS } from '../tokenizer.js';
import { jsonSchemaToTypeScript } from './schema.js';
import type { ContentPart, DeveloperContent, HarmonyMessage, Role, SystemContent, ToolNamespaces } from './types.js';
import { isRole } from './types.js';

export interface RenderConversationConfig {
  /**
   * Drop `analysis` messages that come before the first `final` message, when the last assistant
   * message is `final` (kernels/MODEL.md, "Harmony history"). Default true, as in the official
   * Python API; the Rust API without a config drops nothing, which `false` reproduces.
   */
  autoDropAnalysis?: boolean;
}

/** What the system message needs to know about the rest of the conversation. */
interface RenderContext {
  conversationHasFunctionTools: boolean;
}

const CONSTRAIN = '<|constrain|>';
const EFFORT_TEXT = { Low: 'low', Medium: 'medium', High: 'high' } as const;

/**
 * A rendered conversation before encoding: its texts, each to be encoded on its own (joining two
 * could change their tokens), and framing tokens by id. Rendering checks the messages; encoding,
 * the slow part for a large prompt, can then wait for encodePartsAsync().
 */
export type PromptParts = readonly (string | number)[];

class TokenSink {
  readonly parts: (string | number)[] = [];

  text(s: string): void {
    if (s.length > 0) this.parts.push(s);
  }

  special(id: number): void {
    this.parts.push(id);
  }

  encode(): number[] {
    return encodeParts(this.parts);
  }
}

/** The parts' tokens, on this thread. */
export function encodeParts(parts: PromptParts): number[] {
  return getTokenizer().encodeParts(parts);
}

/** The parts' tokens; a large prompt is encoded on the tokenizer's worker thread (encodePartsAsync). */
export function encodePartsAsync(parts: PromptParts): Promise<number[]> {
  return getTokenizer().encodePartsAsync(parts);
}

/** The conversation's tokens, with `<|start|>{nextTurnRole}` appended: the prompt for sampling. */
export function renderConversationForCompletion(
  messages: readonly HarmonyMessage[],
  nextTurnRole: Role = 'assistant',
  config?: RenderConversationConfig,
): number[] {
  return encodeParts(renderConversationForCompletionParts(messages, nextTurnRole, config));
}

/** renderConversationForCompletion, with a large prompt encoded off the event loop. */
export async function renderConversationForCompletionAsync(
  messages: readonly HarmonyMessage[],
  nextTurnRole: Role = 'assistant',
  config?: RenderConversationConfig,
): Promise<number[]> {
  return encodePartsAsync(renderConversationForCompletionParts(messages, nextTurnRole, config));
}

/** renderConversationForCompletion's parts: the messages checked now, the text not yet encoded. */
export function renderConversationForCompletionParts(
  messages: readonly HarmonyMessage[],
  nextTurnRole: Role = 'assistant',
  config?: RenderConversationConfig,
): PromptParts {
  if (!isRole(nextTurnRole))
    throw new InvalidArgumentError(
      `nextTurnRole: expected one of system, developer, user, assistant, tool; got ${JSON.stringify(nextTurnRole)}`,
    );
  const sink = renderInto(messages, config);
  sink.special(TOKENS.start);
  sink.text(nextTurnRole);
  return sink.parts;
}

/** The conversation's tokens, each message closed by `<|end|>` or `<|call|>`. */
export function renderConversation(messages: readonly HarmonyMessage[], config?: RenderConversationConfig): number[] {
  return renderInto(messages, config).encode();
}

/**
 * As renderConversation, but a conversation ending in an assistant `final` message ends with
 * `<|return|>` instead of its last token: what the model emits when it finishes an answer.
 */
export function renderConversationForTraining(
  messages: readonly HarmonyMessage[],
  config?: RenderConversationConfig,
): number[] {
  const tokens = renderInto(messages, config).encode();
  const last = messages.at(-1);
  if (last && last.role === 'assistant' && last.channel === 'final' && tokens.length > 0)
    tokens[tokens.length - 1] = TOKENS.return;
  return tokens;
}

/**
 * One message on its own. The system message then never gets the line about function tools,
 * which depends on the developer message (HAR renders a lone message without that context).
 */
export function renderMessage(message: HarmonyMessage): number[] {
  checkMessages([message]);
  const sink = new TokenSink();
  renderMessageInto(message, sink, { conversationHasFunctionTools: false });
  return sink.encode();
}

function renderInto(messages: readonly HarmonyMessage[], config: RenderConversationConfig | undefined): TokenSink {
  checkKeys(config ?? undefined, ['autoDropAnalysis'], 'render config');
  const autoDrop = config?.autoDropAnalysis ?? true;
  if (typeof autoDrop !== 'boolean')
    throw new InvalidArgumentError(
      `render config: autoDropAnalysis must be a boolean, got ${JSON.stringify(autoDrop)}`,
    );
  checkMessages(messages);
  const keep = keptMessages(messages, autoDrop);
  const ctx: RenderContext = { conversationHasFunctionTools: messages.some(definesFunctionTools) };
  const sink = new TokenSink();
  for (const m of keep) renderMessageInto(m, sink, ctx);
  return sink;
}

/**
 * HAR's exact dropping rule (encoding.rs render_conversation_into): only when the last assistant
 * message is on `final`, and only analysis before the *first* `final` message. Analysis of a turn
 * still waiting on tool results is kept: the model continues that reasoning.
 */
function keptMessages(messages: readonly HarmonyMessage[], autoDropAnalysis: boolean): readonly HarmonyMessage[] {
  if (!autoDropAnalysis) return messages;
  let lastAssistant: HarmonyMessage | undefined;
  for (const m of messages) if (m.role === 'assistant') lastAssistant = m;
  if (lastAssistant?.channel !== 'final') return messages;
  const firstFinal = messages.findIndex((m) => m.channel === 'final');
  return messages.filter((m, i) => !(i < firstFinal && m.channel === 'analysis'));
}

function definesFunctionTools(m: HarmonyMessage): boolean {
  return m.content.some((c) => c.type === 'developer_content' && (c.tools?.functions?.tools?.length ?? 0) > 0);
}

function checkMessages(messages: readonly HarmonyMessage[]): void {
  if (!Array.isArray(messages)) throw new InvalidArgumentError('messages: expected an array of messages');
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null)
      throw new InvalidArgumentError(`messages[${i}]: expected a message object`);
    if (!isRole(m.role))
      throw new InvalidArgumentError(
        `messages[${i}].role: expected one of system, developer, user, assistant, tool; got ${JSON.stringify(m.role)}`,
      );
    if (!Array.isArray(m.content))
      throw new InvalidArgumentError(`messages[${i}].content: expected an array of content parts`);
  });
}

/** `<|start|>{author}[ to={recipient}][<|channel|>{channel}][ {content_type}]<|message|>{content}{end}` */
function renderMessageInto(m: HarmonyMessage, sink: TokenSink, ctx: RenderContext): void {
  sink.special(TOKENS.start);
  if (m.role === 'tool') {
    // A tool's reply is authored by the tool itself (`functions.get_weather`), not by "tool".
    if (m.name == null)
      throw new HarmonyError('a tool message needs a name: the tool that produced it, e.g. functions.get_weather');
    sink.text(m.name);
  } else {
    sink.text(m.role);
    if (m.name != null) sink.text(`:${m.name}`);
  }
  if (m.recipient != null && m.recipient !== 'all') sink.text(` to=${m.recipient}`);
  if (m.channel != null) {
    sink.special(TOKENS.channel);
    sink.text(m.channel);
  }
  if (m.content_type != null) {
    if (m.content_type.startsWith(CONSTRAIN)) {
      // The marker is the special token, after a plain space: ` <|constrain|>json`.
      sink.text(' ');
      sink.special(TOKENS.constrain);
      sink.text(m.content_type.slice(CONSTRAIN.length));
    } else {
      sink.text(` ${m.content_type}`);
    }
  }
  sink.special(TOKENS.message);
  for (const part of m.content) renderContent(part, m.role, sink, ctx);
  // Any recipient, even the unprinted `all`, makes an assistant message a tool call.
  sink.special(m.role === 'assistant' && m.recipient != null ? TOKENS.call : TOKENS.end);
}

function renderContent(part: ContentPart, role: Role, sink: TokenSink, ctx: RenderContext): void {
  switch (part?.type) {
    case 'text':
      sink.text(part.text);
      return;
    case 'system_content':
      if (role !== 'system')
        throw new HarmonyError(`system_content may only appear in a system message, found in a ${role} message`);
      sink.text(systemText(part, ctx));
      return;
    case 'developer_content':
      if (role !== 'developer')
        throw new HarmonyError(`developer_content may only appear in a developer message, found in a ${role} message`);
      sink.text(developerText(part));
      return;
    default:
      throw new InvalidArgumentError(
        `content part: expected type 'text', 'system_content' or 'developer_content'; got ${JSON.stringify((part as { type?: unknown } | null)?.type)}`,
      );
  }
}

/** RULES.md §4: identity, reasoning, built-in tools, channels; blocks joined by a blank line. */
function systemText(sys: SystemContent, ctx: RenderContext): string {
  const sections: string[] = [];
  const identity: string[] = [];
  if (sys.model_identity != null) identity.push(sys.model_identity);
  if (sys.knowledge_cutoff != null) identity.push(`Knowledge cutoff: ${sys.knowledge_cutoff}`);
  if (sys.conversation_start_date != null) identity.push(`Current date: ${sys.conversation_start_date}`);
  if (identity.length > 0) sections.push(identity.join('\n'));
  if (sys.reasoning_effort != null) {
    const effort = EFFORT_TEXT[sys.reasoning_effort];
    if (effort === undefined)
      throw new InvalidArgumentError(
        `reasoning_effort: expected 'Low', 'Medium' or 'High'; got ${JSON.stringify(sys.reasoning_effort)}`,
      );
    sections.push(`Reasoning: ${effort}`);
  }
  if (sys.tools && Object.keys(sys.tools).length > 0) sections.push(toolsSection(sys.tools));
  const channels = sys.channel_config?.valid_channels ?? [];
  if (channels.length > 0) {
    let block = `# Valid channels: ${channels.join(', ')}.`;
    if (sys.channel_config?.channel_required) block += ' Channel must be included for every message.';
    // This sentence only exists inside the channel block: no channels, no sentence (HAR).
    if (ctx.conversationHasFunctionTools)
      block += "\nCalls to these tools must go to the commentary channel: 'functions'.";
    sections.push(block);
  }
  return sections.join('\n\n');
}

/**
 * `# Instructions` + text, then function tools. No trailing blank line (kernels/MODEL.md,
 * "Harmony messages").
 */
function developerText(dev: DeveloperContent): string {
  const sections: string[] = [];
  if (dev.instructions != null) sections.push('# Instructions', dev.instructions);
  if (dev.tools && Object.keys(dev.tools).length > 0) sections.push(toolsSection(dev.tools));
  if (dev.response_formats) sections.push(dev.response_formats);
  return sections.join('\n\n');
}

/** Rust's str::lines(): split on \n, drop a trailing \r per line, no empty last line. */
function lines(text: string): string[] {
  if (text.length === 0) return [];
  const out = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (text.endsWith('\n')) out.pop();
  return out;
}

/** RULES.md §6. Namespaces sorted by key; tools keep their order. */
export function toolsSection(namespaces: ToolNamespaces): string {
  const blocks = ['# Tools'];
  const keys = Object.keys(namespaces).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const key of keys) {
    const ns = namespaces[key];
    const tools = ns.tools ?? [];
    const out = [`## ${ns.name}\n`];
    // A namespace without tools (python) is prose; with tools its description is a comment.
    for (const line of lines(ns.description ?? '')) out.push(tools.length > 0 ? `// ${line}` : line);
    if (tools.length > 0) {
      out.push(`namespace ${ns.name} {\n`);
      for (const tool of tools) {
        for (const line of lines(tool.description ?? '')) out.push(`// ${line}`);
        out.push(
          tool.parameters != null
            ? `type ${tool.name} = (_: ${jsonSchemaToTypeScript(tool.parameters)}) => any;\n`
            : `type ${tool.name} = () => any;\n`,
        );
      }
      out.push(`} // namespace ${ns.name}`);
    }
    blocks.push(out.join('\n'));
  }
  return blocks.join('\n\n');
}
