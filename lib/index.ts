export { loadModel, Model, Session } from './engine/model.js';
export type { Device, PrecisionMode } from './backend/device.js';
export type { ForwardOptions, LoadModelOptions, SessionOptions } from './engine/model.js';
export { createSyntheticModel, presetConfig } from './engine/synthetic.js';
export type { Preset, SyntheticModelOptions } from './engine/synthetic.js';
export type { ModelConfig } from './checkpoint/config.js';
export type { Layout } from './checkpoint/checkpoint.js';
export { deviceInfo } from './backend/native.js';
export * from './errors.js';
export { ChatStream, Generation, toHarmony } from './chat/generate.js';
export type {
  ChatEvent,
  ChatMessage,
  ChatOptions,
  ChatResult,
  CompleteOptions,
  CompletionEvent,
  CompletionResult,
  FinishReason,
  FunctionTool,
  GenerateOptions,
  Timings,
  TokenLogprob,
  ToolCall,
  Usage,
} from './chat/generate.js';
export { DEFAULT_SAMPLING, sampleLogits } from './engine/sampler.js';
export type { SamplingOptions } from './engine/sampler.js';
export { getTokenizer, Tokenizer, SPECIAL_TOKENS } from './chat/tokenizer.js';
export * as harmony from './chat/harmony/index.js';
export { DEFAULT_MODEL, hubCacheDir, listCached, ModelNotFoundError, pull, resolveModelDir } from './checkpoint/hub.js';
export type { CachedModel, PullOptions, PullProgress, PullResult, WeightLayout } from './checkpoint/hub.js';
export { estimateMemory, InsufficientMemoryError, weightBytes } from './engine/memory.js';
export type { MemoryEstimate } from './engine/memory.js';
export { createEngine, Engine } from './engine/engine.js';
export type { EngineOptions, EngineStats } from './engine/engine.js';
export { checkSchema } from './chat/structured.js';
export type { JsonSchemaFormat, ResponseFormat, ToolChoice } from './chat/structured.js';
