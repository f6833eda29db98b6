// Models with the real gpt-oss shapes and random weights, deterministic from a seed, generated in
// memory (native/DESIGN.md, "Weights"): for benchmarks and tests when no checkpoint is at hand.
import type { ModelConfig } from '../checkpoint/config.js';
import { InvalidArgumentError } from '../errors.js';
import type { ModelWeightIds } from './graph.js';
import { DEVICES, type Device, PRECISION_MODES, type PrecisionMode } from '../backend/device.js';
import { Model } from './model.js';
import { addon, assertDevice, type SyntheticTensorSpec, type WeightId } from '../backend/native.js';
import { checkInt, checkKeys, checkOneOf } from '../options.js';
import { estimateMemory, InsufficientMemoryError } from './memory.js';

export type Preset = '20b' | '120b';

/** The published configs (kernels/MODEL.md, "Config"), with `layers` in place of 24 / 36. */
export function presetConfig(preset: Preset, layers?: number): ModelConfig {
  const numLayers = layers ?? (preset === '20b' ? 24 : 36);
  return {
    numLayers,
    numExperts: preset === '20b' ? 32 : 128,
    expertsPerToken: 4,
    vocabSize: 201088,
    hiddenSize: 2880,
    intermediateSize: 2880,
    swigluLimit: 7,
    swigluAlpha: 1.702,
    headDim: 64,
    numHeads: 64,
    numKvHeads: 8,
    slidingWindow: 128,
    initialContextLength: 4096,
    ropeTheta: 150000,
    ropeScalingFactor: 32,
    ropeNtkAlpha: 1,
    ropeNtkBeta: 32,
    rmsNormEps: 1e-5,
    maxContext: 131072,
    layerWindows: Array.from({ length: numLayers }, (_, l) => (l % 2 === 0 ? 128 : 0)),
  };
}

/**
 * The E8M0 byte that gives random MXFP4 rows the RMS of 1/sqrt(fan-in): E2M1 codes have RMS 2.93,
 * and 2^(byte - 127) * 2.93 ~ 1/sqrt(fan-in).
 */
export const mxfp4ScaleCentre = (fanIn: number): number => Math.round(127 + Math.log2(1 / (Math.sqrt(fanIn) * 2.93)));

export interface SyntheticModelOptions {
  preset?: Preset;
  /** Use this config instead of a preset (tests: small random models). */
  config?: ModelConfig;
  layers?: number;
  seed?: number;
  device?: Device;
  mode?: PrecisionMode;
}

/** Where each weight of a synthetic model sits in the spec list (its index there). */
export interface SyntheticIndex {
  embedding: number;
  norm: number;
  unembedding: number;
  layers: {
    attnNorm: number;
    qkv: { weight: number; bias: number; row: number; rows: number }[];
    sinks: number;
    outWeight: number;
    outBias: number;
    mlpNorm: number;
    routerWeight: number;
    routerBias: number;
    mlp1Blocks: number;
    mlp1Scales: number;
    mlp1Bias: number;
    mlp2Blocks: number;
    mlp2Scales: number;
    mlp2Bias: number;
  }[];
}

/**
 * The tensors of a synthetic model: what the addon generates for createSyntheticModel, and what
 * lib/checkpoint/synthetic-files.ts writes to files (the same bytes, from the same list).
 */
export function syntheticTensorSpecs(
  cfg: ModelConfig,
  seed: number,
): { specs: SyntheticTensorSpec[]; idx: SyntheticIndex } {
  const H = cfg.hiddenSize,
    I = cfg.intermediateSize,
    E = cfg.numExperts,
    D = cfg.headDim;
  const qkvRows = (cfg.numHeads + 2 * cfg.numKvHeads) * D;
  const specs: SyntheticTensorSpec[] = [];
  let n = 0;
  const t = (name: string, kind: SyntheticTensorSpec['kind'], bytes: number, a: number): number => {
    specs.push({ name, kind, bytes, seed: seed * 1_000_003 + n, a });
    return n++;
  };
  // Uniform weights with the RMS of 1/sqrt(fan-in); MXFP4 scales centred to match (mxfp4ScaleCentre).
  const dense = (fanIn: number) => Math.sqrt(3 / fanIn);
  const idx: SyntheticIndex = {
    embedding: t('embedding', 'bf16-uniform', cfg.vocabSize * H * 2, 1),
    norm: t('norm', 'bf16-const', H * 2, 1),
    unembedding: t('unembedding', 'bf16-uniform', cfg.vocabSize * H * 2, dense(H)),
    layers: cfg.layerWindows.map((_, l) => ({
      attnNorm: t(`${l}.attn.norm`, 'bf16-const', H * 2, 1),
      qkv: [
        {
          weight: t(`${l}.qkv`, 'bf16-uniform', qkvRows * H * 2, dense(H)),
          bias: t(`${l}.qkv.bias`, 'bf16-uniform', qkvRows * 2, 0.02),
          row: 0,
          rows: qkvRows,
        },
      ],
      sinks: t(`${l}.sinks`, 'bf16-uniform', cfg.numHeads * 2, 1),
      outWeight: t(`${l}.out`, 'bf16-uniform', H * cfg.numHeads * D * 2, dense(cfg.numHeads * D)),
      outBias: t(`${l}.out.bias`, 'bf16-uniform', H * 2, 0.02),
      mlpNorm: t(`${l}.mlp.norm`, 'bf16-const', H * 2, 1),
      routerWeight: t(`${l}.gate`, 'bf16-uniform', E * H * 2, dense(H)),
      routerBias: t(`${l}.gate.bias`, 'bf16-uniform', E * 2, 0.02),
      mlp1Blocks: t(`${l}.mlp1.blocks`, 'u8-uniform', (E * 2 * I * H) / 2, 0),
      mlp1Scales: t(`${l}.mlp1.scales`, 'u8-around', (E * 2 * I * H) / 32, mxfp4ScaleCentre(H)),
      mlp1Bias: t(`${l}.mlp1.bias`, 'bf16-uniform', E * 2 * I * 2, 0.02),
      mlp2Blocks: t(`${l}.mlp2.blocks`, 'u8-uniform', (E * H * I) / 2, 0),
      mlp2Scales: t(`${l}.mlp2.scales`, 'u8-around', (E * H * I) / 32, mxfp4ScaleCentre(I)),
      mlp2Bias: t(`${l}.mlp2.bias`, 'bf16-uniform', E * H * 2, 0.02),
    })),
  };
  return { specs, idx };
}

export async function createSyntheticModel(options: SyntheticModelOptions = {}): Promise<Model> {
  checkKeys(options, ['preset', 'config', 'layers', 'seed', 'device', 'mode'], 'createSyntheticModel');
  const preset = checkOneOf(options.preset, ['20b', '120b'] as const, 'preset', '20b');
  const device = checkOneOf(options.device, DEVICES, 'device', 'cpu');
  const mode = checkOneOf(options.mode, PRECISION_MODES, 'mode', 'default');
  const seed = checkInt(options.seed, 'seed', 1, 0);
  if (options.config && options.layers !== undefined)
    throw new InvalidArgumentError('pass either config or layers, not both');
  const cfg =
    options.config ?? presetConfig(preset, checkInt(options.layers, 'layers', preset === '20b' ? 24 : 36, 1, 64));
  assertDevice(device);
  // Synthetic weights are allocated, not mapped: refuse before allocating what cannot fit (on the
  // host, in the RAM available now).
  const estimate = estimateMemory(cfg, { device, mode });
  if (!(device === 'cpu' ? estimate.fitsAvailable : estimate.fits)) throw new InsufficientMemoryError(estimate);

  const { specs, idx } = syntheticTensorSpecs(cfg, seed);
  const { Weights } = addon();
  const weights = new Weights();
  try {
    const ids = await weights.addSynthetic(specs);
    const m = (i: number) => ids[i] as WeightId;
    const mapped: ModelWeightIds = {
      embedding: m(idx.embedding),
      norm: m(idx.norm),
      unembedding: m(idx.unembedding),
      layers: idx.layers.map((l) => ({
        ...Object.fromEntries(Object.entries(l).map(([k, v]) => [k, typeof v === 'number' ? m(v) : v])),
        qkv: l.qkv.map((p) => ({ ...p, weight: m(p.weight), bias: m(p.bias) })),
      })) as ModelWeightIds['layers'],
    };
    if (device !== 'cpu') await weights.upload(device); // off the JS thread, before any program
    return new Model({ config: cfg, device, mode, layout: 'synthetic', weights, ids: mapped });
  } catch (e) {
    weights.dispose();
    throw e;
  }
}
