export { loadModel, Model, Session } from './model.js';
export type { Device, ForwardOptions, LoadModelOptions, PrecisionMode, SessionOptions } from './model.js';
export { createSyntheticModel, presetConfig } from './synthetic.js';
export type { Preset, SyntheticModelOptions } from './synthetic.js';
export type { ModelConfig } from './config.js';
export type { Layout } from './checkpoint.js';
export { deviceInfo } from './device.js';
export * from './errors.js';
