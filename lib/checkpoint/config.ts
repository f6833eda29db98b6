// config.json in either flavour (kernels/MODEL.md, "Config"): the original layout's keys, or the
// Hugging Face keys (with `rope_scaling` or the newer `rope_parameters`). Keys that would change
// the model's arithmetic are checked for values this engine implements; unknown keys are refused,
// since they might.
import { CheckpointError, UnsupportedError } from '../errors.js';

export interface ModelConfig {
  numLayers: number;
  numExperts: number;
  expertsPerToken: number;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  swigluLimit: number;
  swigluAlpha: number;
  headDim: number;
  numHeads: number;
  numKvHeads: number;
  slidingWindow: number;
  initialContextLength: number;
  ropeTheta: number;
  ropeScalingFactor: number;
  ropeNtkAlpha: number;
  ropeNtkBeta: number;
  rmsNormEps: number;
  /** Positions the model was trained for (initial context x YaRN factor). */
  maxContext: number;
  /** Per layer: the sliding window, or 0 for full attention (even layers slide; kernels/MODEL.md, "Config"). */
  layerWindows: number[];
}

export type ConfigFlavour = 'original' | 'hf';

const originalKeys = [
  'num_hidden_layers',
  'num_experts',
  'experts_per_token',
  'vocab_size',
  'hidden_size',
  'intermediate_size',
  'swiglu_limit',
  'head_dim',
  'num_attention_heads',
  'num_key_value_heads',
  'sliding_window',
  'initial_context_length',
  'rope_theta',
  'rope_scaling_factor',
  'rope_ntk_alpha',
  'rope_ntk_beta',
];
const hfKeys = [
  'architectures',
  'model_type',
  'attention_bias',
  'attention_dropout',
  'bos_token_id',
  'eos_token_id',
  'pad_token_id',
  'experts_per_token',
  'num_experts_per_tok',
  'head_dim',
  'hidden_act',
  'hidden_size',
  'initial_context_length',
  'initializer_range',
  'intermediate_size',
  'layer_types',
  'max_position_embeddings',
  'num_attention_heads',
  'num_hidden_layers',
  'num_key_value_heads',
  'num_local_experts',
  'output_router_logits',
  'quantization_config',
  'rms_norm_eps',
  'rope_scaling',
  'rope_parameters',
  'rope_theta',
  'router_aux_loss_coef',
  'sliding_window',
  'swiglu_limit',
  'swiglu_alpha',
  'tie_word_embeddings',
  'transformers_version',
  'use_cache',
  'vocab_size',
  'torch_dtype',
  'dtype',
  '_name_or_path',
];

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

/** The closest of `known` to `key`, when it is close enough to be a likely misspelling (case
 * differences count for less than other edits, so "topp" suggests "topP" over "topK"). */
export function suggest(key: string, known: readonly string[]): string | undefined {
  // The distance table is key x known: a hostile megabyte-long key must not cost gigabytes.
  if (key.length > 64) return undefined;
  let best: string | undefined,
    bestD = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase()) + editDistance(key, k) / 100;
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(key.length / 4)) + 0.5 ? best : undefined;
}

export function detectFlavour(json: Record<string, unknown>): ConfigFlavour {
  const hfOnly = [
    'model_type',
    'num_local_experts',
    'rope_scaling',
    'rope_parameters',
    'rms_norm_eps',
    'architectures',
  ];
  return hfOnly.some((k) => k in json) ? 'hf' : 'original';
}

/**
 * Upper bounds on what a config may say, far above gpt-oss (36 layers, 201,088 tokens, hidden 2880,
 * 64 heads of 64, 131,072 positions): everything is sized from these numbers, so a hostile
 * `num_hidden_layers: 1e9` must be refused here, not found out by the allocator.
 */
export const CONFIG_LIMITS = {
  num_hidden_layers: 1024,
  // Past 256 is refused as unsupported below; this bound only keeps the number sane.
  num_experts: 1 << 16,
  vocab_size: 1 << 22,
  hidden_size: 1 << 16,
  intermediate_size: 1 << 18,
  head_dim: 1024,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  positions: 1 << 22,
} as const;

/**
 * Upper bounds on the float keys (gpt-oss: swiglu_limit 7, swiglu_alpha 1.702, rope_theta 150,000,
 * YaRN factor 32, beta_slow 1, beta_fast 32, rms_norm_eps 1e-5), far past what any model uses: a
 * hostile 1e300 would otherwise reach the arithmetic as inf or NaN.
 */
export const FLOAT_LIMITS = {
  swiglu_limit: 1e4,
  swiglu_alpha: 1e3,
  rope_theta: 1e12,
  rope_scaling_factor: 1e4,
  rope_ntk_alpha: 1e4,
  rope_ntk_beta: 1e4,
  rms_norm_eps: 1,
} as const;

/** A value for a message, cut short: a hostile config may hold megabytes in one key. */
function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

export interface ParseConfigOptions {
  /** Refuse keys this engine does not know (default true). */
  strict?: boolean;
}

export function parseConfig(json: unknown, file: string, options: ParseConfigOptions = {}): ModelConfig {
  const bad = (msg: string): never => {
    throw new CheckpointError(msg, { file });
  };
  const unsupported = (msg: string): never => {
    throw new UnsupportedError(`${file}: ${msg}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) bad('config is not a JSON object');
  const c = json as Record<string, unknown>;
  const flavour = detectFlavour(c);
  const known = flavour === 'hf' ? hfKeys : originalKeys;
  if (options.strict !== false) {
    for (const key of Object.keys(c)) {
      if (known.includes(key)) continue;
      const hint = suggest(key, known);
      unsupported(
        `unknown config key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; it may change the model's ` +
          `arithmetic, which this engine would silently ignore. Pass strictConfig: false to load anyway.`,
      );
    }
  }
  const int = (key: string, max: number, def?: number, min = 1): number => {
    const v = c[key] ?? def;
    if (v === undefined) bad(`missing required key "${key}"`);
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max)
      bad(`"${key}" must be an integer in [${min}, ${max}], got ${show(v)}`);
    return v as number;
  };
  // Every float here is a scale, a rate or a base: zero or negative is never meant.
  const num = (v: unknown, key: string, def: number, max: number): number => {
    const x = v ?? def;
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0)
      bad(`"${key}" must be a finite number > 0, got ${show(x)}`);
    if ((x as number) > max) bad(`"${key}" must be at most ${max}, got ${show(x)}`);
    return x as number;
  };
  const F = FLOAT_LIMITS;
  const L = CONFIG_LIMITS;

  let cfg: ModelConfig;
  if (flavour === 'original') {
    cfg = {
      numLayers: int('num_hidden_layers', L.num_hidden_layers),
      numExperts: int('num_experts', L.num_experts),
      expertsPerToken: int('experts_per_token', L.num_experts),
      vocabSize: int('vocab_size', L.vocab_size),
      hiddenSize: int('hidden_size', L.hidden_size),
      intermediateSize: int('intermediate_size', L.intermediate_size),
      swigluLimit: num(c.swiglu_limit, 'swiglu_limit', 7.0, F.swiglu_limit),
      swigluAlpha: 1.702,
      headDim: int('head_dim', L.head_dim, 64),
      numHeads: int('num_attention_heads', L.num_attention_heads),
      numKvHeads: int('num_key_value_heads', L.num_key_value_heads),
      slidingWindow: int('sliding_window', L.positions, 128),
      initialContextLength: int('initial_context_length', L.positions, 4096),
      ropeTheta: num(c.rope_theta, 'rope_theta', 150000, F.rope_theta),
      ropeScalingFactor: num(c.rope_scaling_factor, 'rope_scaling_factor', 32, F.rope_scaling_factor),
      ropeNtkAlpha: num(c.rope_ntk_alpha, 'rope_ntk_alpha', 1, F.rope_ntk_alpha),
      ropeNtkBeta: num(c.rope_ntk_beta, 'rope_ntk_beta', 32, F.rope_ntk_beta),
      rmsNormEps: 1e-5,
      maxContext: 0,
      layerWindows: [],
    };
  } else {
    if (c.model_type !== undefined && c.model_type !== 'gpt_oss')
      unsupported(`model_type "${String(c.model_type)}" is not gpt_oss`);
    if (c.tie_word_embeddings === true) unsupported('tie_word_embeddings: true (gpt-oss has a separate unembedding)');
    if (c.attention_bias === false) unsupported('attention_bias: false (gpt-oss has QKV and output biases)');
    if (c.hidden_act !== undefined && c.hidden_act !== 'silu') unsupported(`hidden_act "${String(c.hidden_act)}"`);
    const q = c.quantization_config as { quant_method?: unknown } | undefined;
    if (q !== undefined && (typeof q !== 'object' || q === null || q.quant_method !== 'mxfp4'))
      unsupported(
        `quantization_config.quant_method ${JSON.stringify(q?.quant_method)} (only mxfp4 experts are supported)`,
      );
    const rope = (c.rope_parameters ?? c.rope_scaling) as Record<string, unknown> | undefined;
    const ropeKey = c.rope_parameters !== undefined ? 'rope_parameters' : 'rope_scaling';
    if (rope !== undefined && (typeof rope !== 'object' || rope === null)) bad(`"${ropeKey}" must be an object`);
    if (rope && rope.rope_type !== undefined && rope.rope_type !== 'yarn')
      unsupported(`${ropeKey}.rope_type "${String(rope.rope_type)}" (gpt-oss uses yarn)`);
    if (rope && rope.truncate === true)
      unsupported(
        `${ropeKey}.truncate: true (gpt-oss's YaRN ramp uses fractional bounds; truncation changes the model)`,
      );
    const k1 = c.num_experts_per_tok,
      k2 = c.experts_per_token;
    if (k1 !== undefined && k2 !== undefined && k1 !== k2)
      bad(`num_experts_per_tok (${k1}) and experts_per_token (${k2}) disagree`);
    cfg = {
      numLayers: int('num_hidden_layers', L.num_hidden_layers),
      numExperts: int('num_local_experts', L.num_experts),
      expertsPerToken: int(k1 !== undefined ? 'num_experts_per_tok' : 'experts_per_token', L.num_experts),
      vocabSize: int('vocab_size', L.vocab_size),
      hiddenSize: int('hidden_size', L.hidden_size),
      intermediateSize: int('intermediate_size', L.intermediate_size),
      swigluLimit: num(c.swiglu_limit, 'swiglu_limit', 7.0, F.swiglu_limit),
      swigluAlpha: num(c.swiglu_alpha, 'swiglu_alpha', 1.702, F.swiglu_alpha),
      headDim: int('head_dim', L.head_dim, 64),
      numHeads: int('num_attention_heads', L.num_attention_heads),
      numKvHeads: int('num_key_value_heads', L.num_key_value_heads),
      slidingWindow: int('sliding_window', L.positions, 128),
      initialContextLength: int(
        'initial_context_length',
        L.positions,
        (rope?.original_max_position_embeddings as number | undefined) ?? 4096,
      ),
      ropeTheta: num(c.rope_theta ?? rope?.rope_theta, 'rope_theta', 150000, F.rope_theta),
      ropeScalingFactor: num(rope?.factor, `${ropeKey}.factor`, 32, F.rope_scaling_factor),
      ropeNtkAlpha: num(rope?.beta_slow, `${ropeKey}.beta_slow`, 1, F.rope_ntk_alpha),
      ropeNtkBeta: num(rope?.beta_fast, `${ropeKey}.beta_fast`, 32, F.rope_ntk_beta),
      rmsNormEps: num(c.rms_norm_eps, 'rms_norm_eps', 1e-5, F.rms_norm_eps),
      maxContext: 0,
      layerWindows: [],
    };
    if (
      rope?.original_max_position_embeddings !== undefined &&
      c.initial_context_length !== undefined &&
      rope.original_max_position_embeddings !== c.initial_context_length
    )
      bad(`${ropeKey}.original_max_position_embeddings and initial_context_length disagree`);
  }

  cfg.layerWindows = Array.from({ length: cfg.numLayers }, (_, l) => (l % 2 === 0 ? cfg.slidingWindow : 0));
  if (flavour === 'hf' && c.layer_types !== undefined) {
    const lt = c.layer_types;
    if (!Array.isArray(lt) || lt.length !== cfg.numLayers) bad(`layer_types must list ${cfg.numLayers} layers`);
    (lt as unknown[]).forEach((t, l) => {
      const want = l % 2 === 0 ? 'sliding_attention' : 'full_attention';
      if (t !== want)
        unsupported(`layer_types[${l}] is ${JSON.stringify(t)}; gpt-oss has ${want} there (even layers slide)`);
    });
  }
  cfg.maxContext = Math.round(cfg.initialContextLength * Math.max(1, cfg.ropeScalingFactor));
  if (flavour === 'hf' && c.max_position_embeddings !== undefined)
    cfg.maxContext = int('max_position_embeddings', L.positions);
  else if (cfg.maxContext > L.positions)
    bad(
      `initial_context_length ${cfg.initialContextLength} x rope scaling factor ${cfg.ropeScalingFactor} gives ${cfg.maxContext} positions, over the ${L.positions} supported`,
    );
  // Sessions and the engine size their window rings from this; longer than the context is meaningless.
  if (cfg.slidingWindow > cfg.maxContext)
    bad(`sliding_window ${cfg.slidingWindow} exceeds the ${cfg.maxContext} positions of the context`);

  // Shapes the kernels rely on.
  if (cfg.hiddenSize % 32) bad(`hidden_size ${cfg.hiddenSize} is not a multiple of the MXFP4 block (32)`);
  if (cfg.intermediateSize % 32)
    bad(`intermediate_size ${cfg.intermediateSize} is not a multiple of the MXFP4 block (32)`);
  if (cfg.headDim % 2) bad(`head_dim ${cfg.headDim} must be even for the rotary embedding`);
  if (cfg.numHeads % cfg.numKvHeads)
    bad(`num_attention_heads ${cfg.numHeads} is not a multiple of num_key_value_heads ${cfg.numKvHeads}`);
  if (cfg.numExperts > 256) unsupported(`${cfg.numExperts} experts (at most 256 are supported)`);
  if (cfg.expertsPerToken > cfg.numExperts)
    bad(`experts_per_token ${cfg.expertsPerToken} exceeds the ${cfg.numExperts} experts`);
  if (cfg.ropeScalingFactor > 1) {
    const dHalf = cfg.headDim / 2;
    const low =
      (dHalf * Math.log(cfg.initialContextLength / (cfg.ropeNtkBeta * 2 * Math.PI))) / Math.log(cfg.ropeTheta);
    const high =
      (dHalf * Math.log(cfg.initialContextLength / (cfg.ropeNtkAlpha * 2 * Math.PI))) / Math.log(cfg.ropeTheta);
    if (!(low > 0 && low < high && high < dHalf - 1))
      bad(`rope settings give YaRN bounds low=${low}, high=${high} outside (0, ${dHalf - 1})`);
  }
  return cfg;
}
