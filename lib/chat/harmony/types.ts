// Harmony message types (kernels/MODEL.md, "Harmony"), in the JSON shape the official library
// serialises (HAR chat.rs with serde): the author is flattened into `role` + `name`, content parts
// are tagged by `type`, and field names stay snake_case so fixtures and API payloads need no
// mapping.

/** Message authors, in decreasing authority (kernels/MODEL.md, "Harmony messages"). */
export type Role = 'system' | 'developer' | 'user' | 'assistant' | 'tool';

export const ROLES: readonly Role[] = ['system', 'developer', 'user', 'assistant', 'tool'];

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Any JSON value; tool parameter schemas are plain JSON. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A JSON Schema object. Property order is significant: it is the order tools are shown in. */
export type JsonSchema = { [key: string]: JsonValue };

export interface TextContent {
  type: 'text';
  text: string;
}

/** Capitalised as serde writes the Rust enum. */
export type ReasoningEffort = 'Low' | 'Medium' | 'High';

export interface ChannelConfig {
  valid_channels: string[];
  channel_required: boolean;
}

export interface ToolDescription {
  name: string;
  description: string;
  /** JSON Schema of the single argument object; absent or null renders `() => any`. */
  parameters?: JsonSchema | null;
}

export interface ToolNamespaceConfig {
  name: string;
  description?: string | null;
  tools: ToolDescription[];
}

/** Map key = namespace name; namespaces render sorted by key (HAR stores them in a BTreeMap). */
export type ToolNamespaces = Record<string, ToolNamespaceConfig>;

export interface SystemContent {
  type: 'system_content';
  model_identity?: string | null;
  reasoning_effort?: ReasoningEffort | null;
  knowledge_cutoff?: string | null;
  /** Shown as `Current date: …`; the format is the caller's (the model was trained on YYYY-MM-DD). */
  conversation_start_date?: string | null;
  channel_config?: ChannelConfig | null;
  /** Built-in tools (browser, python) go here; function tools go in the developer message. */
  tools?: ToolNamespaces | null;
}

export interface DeveloperContent {
  type: 'developer_content';
  instructions?: string | null;
  tools?: ToolNamespaces | null;
  /** A rendered `# Response Formats` section, placed last (the Harmony guide's structured output). */
  response_formats?: string | null;
}

export type ContentPart = TextContent | SystemContent | DeveloperContent;

export interface HarmonyMessage {
  role: Role;
  /** Author name. For `tool` messages it is the tool (`functions.get_weather`) and is required. */
  name?: string | null;
  recipient?: string | null;
  channel?: string | null;
  /** e.g. `<|constrain|>json`, `json`, `code`. */
  content_type?: string | null;
  content: ContentPart[];
}

/** The identity line the official `SystemContent::new()` uses (HAR chat.rs). */
export const DEFAULT_MODEL_IDENTITY = 'You are ChatGPT, a large language model trained by OpenAI.';

/**
 * System content with the official defaults (HAR chat.rs `SystemContent::new()`): ChatGPT identity,
 * Medium effort, knowledge cutoff 2024-06, no date, channels analysis/commentary/final required.
 */
export function newSystemContent(overrides: Partial<Omit<SystemContent, 'type'>> = {}): SystemContent {
  return {
    type: 'system_content',
    model_identity: DEFAULT_MODEL_IDENTITY,
    reasoning_effort: 'Medium',
    knowledge_cutoff: '2024-06',
    conversation_start_date: null,
    channel_config: { valid_channels: ['analysis', 'commentary', 'final'], channel_required: true },
    tools: null,
    ...overrides,
  };
}

/** Header fields of a message other than its role. */
export type MessageHeader = Pick<HarmonyMessage, 'name' | 'recipient' | 'channel' | 'content_type'>;

/** A message holding one text part, e.g. `textMessage('user', 'Hi')`. */
export function textMessage(role: Role, text: string, header: MessageHeader = {}): HarmonyMessage {
  return { role, ...header, content: [{ type: 'text', text }] };
}
