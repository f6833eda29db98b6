export { loadModel, Model, Session } from './model.js';
export type { Device, PrecisionMode } from './device.js';
export type { ForwardOptions, LoadModelOptions, SessionOptions } from './model.js';
export { createSyntheticModel, presetConfig } from './synthetic.js';
export type { Preset, SyntheticModelOptions } from './synthetic.js';
export type { ModelConfig } from './config.js';
export type { Layout } from './checkpoint.js';
export { deviceInfo } from './device.js';
export * from './errors.js';
export { ChatStream, Generation, toHarmony } from './generate.js';
export type {
  ChatEvent, ChatMessage, ChatOptions, ChatResult, CompleteOptions, CompletionEvent, CompletionResult, FinishReason,
  FunctionTool, GenerateOptions, Timings, TokenLogprob, ToolCall, Usage,
} from './generate.js';
export { DEFAULT_SAMPLING, sampleLogits } from './sampler.js';
export type { SamplingOptions } from './sampler.js';
export { getTokenizer, Tokenizer, SPECIAL_TOKENS } from './tokenizer.js';
export * as harmony from './harmony/index.js';
export { DEFAULT_MODEL, hubCacheDir, listCached, ModelNotFoundError, pull, resolveModelDir } from './hub.js';
export type { CachedModel, PullOptions, PullProgress, PullResult, WeightLayout } from './hub.js';
export { estimateMemory, InsufficientMemoryError, weightBytes } from './memory.js';
export type { MemoryEstimate } from './memory.js';
export { createEngine, Engine } from './engine.js';
export type { EngineOptions, EngineStats } from './engine.js';
export { checkSchema } from './structured.js';
export type { JsonSchemaFormat, ResponseFormat, ToolChoice } from './structured.js';
