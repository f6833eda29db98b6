// Finds and validates a checkpoint directory in either layout (kernels/MODEL.md, "Checkpoint
// layouts"): the original (`block.N.*`, fused qkv) or Hugging Face (`model.layers.N.*`, split
// q/k/v, sharded with an index). Every tensor's name, dtype and shape is checked against the config
// before any byte of it is used.
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { type ConfigFlavour, detectFlavour, type ModelConfig, parseConfig } from './config.js';
import { CheckpointError } from '../errors.js';
import { MAX_HEADER_BYTES, readSafetensorsHeader, type SafetensorsEntry, type SafetensorsFile } from './safetensors.js';

export type Layout = ConfigFlavour;

interface TensorSpec {
  dtype: 'BF16' | 'U8';
  shape: number[];
}

/** A projection's weight and bias, written at `row` of the fused QKV output. */
export interface Projection {
  weight: string;
  bias: string;
  row: number;
  rows: number;
}

/** Checkpoint tensor names by role, the same shape for both layouts. */
export interface LayerNames {
  attnNorm: string;
  qkv: Projection[];
  sinks: string;
  outWeight: string;
  outBias: string;
  mlpNorm: string;
  routerWeight: string;
  routerBias: string;
  mlp1Blocks: string;
  mlp1Scales: string;
  mlp1Bias: string;
  mlp2Blocks: string;
  mlp2Scales: string;
  mlp2Bias: string;
}

export interface ModelNames {
  embedding: string;
  norm: string;
  unembedding: string;
  layers: LayerNames[];
}

export function tensorNames(cfg: ModelConfig, layout: Layout): ModelNames {
  const qRows = cfg.numHeads * cfg.headDim,
    kvRows = cfg.numKvHeads * cfg.headDim;
  if (layout === 'original') {
    return {
      embedding: 'embedding.weight',
      norm: 'norm.scale',
      unembedding: 'unembedding.weight',
      layers: Array.from({ length: cfg.numLayers }, (_, n) => ({
        attnNorm: `block.${n}.attn.norm.scale`,
        qkv: [
          { weight: `block.${n}.attn.qkv.weight`, bias: `block.${n}.attn.qkv.bias`, row: 0, rows: qRows + 2 * kvRows },
        ],
        sinks: `block.${n}.attn.sinks`,
        outWeight: `block.${n}.attn.out.weight`,
        outBias: `block.${n}.attn.out.bias`,
        mlpNorm: `block.${n}.mlp.norm.scale`,
        routerWeight: `block.${n}.mlp.gate.weight`,
        routerBias: `block.${n}.mlp.gate.bias`,
        mlp1Blocks: `block.${n}.mlp.mlp1_weight.blocks`,
        mlp1Scales: `block.${n}.mlp.mlp1_weight.scales`,
        mlp1Bias: `block.${n}.mlp.mlp1_bias`,
        mlp2Blocks: `block.${n}.mlp.mlp2_weight.blocks`,
        mlp2Scales: `block.${n}.mlp.mlp2_weight.scales`,
        mlp2Bias: `block.${n}.mlp.mlp2_bias`,
      })),
    };
  }
  return {
    embedding: 'model.embed_tokens.weight',
    norm: 'model.norm.weight',
    unembedding: 'lm_head.weight',
    layers: Array.from({ length: cfg.numLayers }, (_, n) => {
      const p = `model.layers.${n}`;
      return {
        attnNorm: `${p}.input_layernorm.weight`,
        qkv: [
          { weight: `${p}.self_attn.q_proj.weight`, bias: `${p}.self_attn.q_proj.bias`, row: 0, rows: qRows },
          { weight: `${p}.self_attn.k_proj.weight`, bias: `${p}.self_attn.k_proj.bias`, row: qRows, rows: kvRows },
          {
            weight: `${p}.self_attn.v_proj.weight`,
            bias: `${p}.self_attn.v_proj.bias`,
            row: qRows + kvRows,
            rows: kvRows,
          },
        ],
        sinks: `${p}.self_attn.sinks`,
        outWeight: `${p}.self_attn.o_proj.weight`,
        outBias: `${p}.self_attn.o_proj.bias`,
        mlpNorm: `${p}.post_attention_layernorm.weight`,
        routerWeight: `${p}.mlp.router.weight`,
        routerBias: `${p}.mlp.router.bias`,
        mlp1Blocks: `${p}.mlp.experts.gate_up_proj_blocks`,
        mlp1Scales: `${p}.mlp.experts.gate_up_proj_scales`,
        mlp1Bias: `${p}.mlp.experts.gate_up_proj_bias`,
        mlp2Blocks: `${p}.mlp.experts.down_proj_blocks`,
        mlp2Scales: `${p}.mlp.experts.down_proj_scales`,
        mlp2Bias: `${p}.mlp.experts.down_proj_bias`,
      };
    }),
  };
}

/**
 * Every tensor the config implies, with its dtype and shape (kernels/MODEL.md, "Original layout",
 * "Hugging Face layout").
 */
export function expectedTensors(cfg: ModelConfig, layout: Layout): Map<string, TensorSpec> {
  const names = tensorNames(cfg, layout);
  const H = cfg.hiddenSize,
    I = cfg.intermediateSize,
    E = cfg.numExperts,
    V = cfg.vocabSize;
  const bf16 = (...shape: number[]): TensorSpec => ({ dtype: 'BF16', shape });
  const u8 = (...shape: number[]): TensorSpec => ({ dtype: 'U8', shape });
  const m = new Map<string, TensorSpec>([
    [names.embedding, bf16(V, H)],
    [names.norm, bf16(H)],
    [names.unembedding, bf16(V, H)],
  ]);
  for (const l of names.layers) {
    m.set(l.attnNorm, bf16(H));
    for (const p of l.qkv) {
      m.set(p.weight, bf16(p.rows, H));
      m.set(p.bias, bf16(p.rows));
    }
    m.set(l.sinks, bf16(cfg.numHeads));
    m.set(l.outWeight, bf16(H, cfg.numHeads * cfg.headDim));
    m.set(l.outBias, bf16(H));
    m.set(l.mlpNorm, bf16(H));
    m.set(l.routerWeight, bf16(E, H));
    m.set(l.routerBias, bf16(E));
    m.set(l.mlp1Blocks, u8(E, 2 * I, H / 32, 16));
    m.set(l.mlp1Scales, u8(E, 2 * I, H / 32));
    m.set(l.mlp1Bias, bf16(E, 2 * I));
    m.set(l.mlp2Blocks, u8(E, H, I / 32, 16));
    m.set(l.mlp2Scales, u8(E, H, I / 32));
    m.set(l.mlp2Bias, bf16(E, H));
  }
  return m;
}

export interface Checkpoint {
  dir: string;
  layout: Layout;
  config: ModelConfig;
  files: SafetensorsFile[];
  names: ModelNames;
  /** name -> [index into files, entry] */
  tensors: Map<string, [number, SafetensorsEntry]>;
}

export interface OpenCheckpointOptions {
  strictConfig?: boolean;
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/**
 * Opens `dir` as a checkpoint: its own config.json, else `dir/original/` (the published repos
 * keep the original layout there). Reads headers only.
 */
export async function openCheckpoint(dir: string, options: OpenCheckpointOptions = {}): Promise<Checkpoint> {
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => {
    throw new CheckpointError(
      e.code === 'ENOENT' ? 'no such directory' : `cannot read: ${e.message}`,
      { file: dir },
      { cause: e },
    );
  });
  if (!st.isDirectory())
    throw new CheckpointError('not a directory (a checkpoint is a directory with config.json and *.safetensors)', {
      file: dir,
    });
  if (!(await isFile(join(dir, 'config.json')))) {
    if (await isFile(join(dir, 'original', 'config.json'))) dir = join(dir, 'original');
    else throw new CheckpointError('not a gpt-oss checkpoint: no config.json here or in original/', { file: dir });
  }
  const configFile = join(dir, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(await readFile(configFile, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`cannot parse: ${(e as Error).message}`, { file: configFile }, { cause: e });
  }
  const config = parseConfig(json, configFile, { strict: options.strictConfig });
  const layout: Layout = detectFlavour(json as Record<string, unknown>);

  // Which files: the index's weight_map when there is one, else every *.safetensors here.
  const indexFile = join(dir, 'model.safetensors.index.json');
  // A Map, not the parsed object: tensor names such as "__proto__" or "constructor" must not
  // find Object.prototype's members.
  let weightMap: Map<string, string> | undefined;
  let fileNames: string[];
  if (await isFile(indexFile)) {
    let index: { weight_map?: unknown };
    try {
      index = JSON.parse(await readFile(indexFile, 'utf8'));
    } catch (e) {
      throw new CheckpointError(`cannot parse: ${(e as Error).message}`, { file: indexFile }, { cause: e });
    }
    if (typeof index.weight_map !== 'object' || index.weight_map === null)
      throw new CheckpointError('no weight_map object', { file: indexFile });
    weightMap = new Map();
    for (const [name, f] of Object.entries(index.weight_map as Record<string, unknown>)) {
      if (typeof f !== 'string' || basename(f) !== f || f === '..' || f === '.')
        throw new CheckpointError(`weight_map names ${JSON.stringify(f)}, not a file in this directory`, {
          file: indexFile,
          tensor: name,
        });
      weightMap.set(name, f);
    }
    fileNames = [...new Set(weightMap.values())].sort();
  } else {
    fileNames = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
    if (fileNames.length === 0) throw new CheckpointError('no .safetensors files', { file: dir });
  }
  const files: SafetensorsFile[] = [];
  // One budget for all headers: an index may name thousands of shards.
  let headerBudget = MAX_HEADER_BYTES;
  for (const f of fileNames) {
    const path = join(dir, f);
    if (!(await isFile(path)))
      throw new CheckpointError(`shard listed in model.safetensors.index.json is missing`, { file: path });
    const file = await readSafetensorsHeader(path, headerBudget);
    headerBudget -= file.headerBytes;
    files.push(file);
  }

  const tensors = new Map<string, [number, SafetensorsEntry]>();
  files.forEach((f, i) => {
    for (const [name, entry] of f.tensors) {
      const prev = tensors.get(name);
      if (prev) throw new CheckpointError(`also stored in ${files[prev[0]].path}`, { file: f.path, tensor: name });
      const listed = weightMap?.get(name);
      if (listed !== undefined && join(dir, listed) !== f.path)
        throw new CheckpointError(`model.safetensors.index.json places it in ${listed}`, {
          file: f.path,
          tensor: name,
        });
      tensors.set(name, [i, entry]);
    }
  });

  const expected = expectedTensors(config, layout);
  for (const [name, spec] of expected) {
    const found = tensors.get(name);
    if (!found) {
      const listed = weightMap?.get(name);
      const where = listed ? join(dir, listed) : dir;
      throw new CheckpointError(`missing (the config implies ${spec.dtype}${JSON.stringify(spec.shape)})`, {
        file: where,
        tensor: name,
      });
    }
    const [fi, e] = found;
    if (e.dtype !== spec.dtype)
      throw new CheckpointError(`dtype ${e.dtype}, expected ${spec.dtype}`, { file: files[fi].path, tensor: name });
    if (e.shape.length !== spec.shape.length || e.shape.some((d, i) => d !== spec.shape[i]))
      throw new CheckpointError(
        `shape ${JSON.stringify(e.shape)}, expected ${JSON.stringify(spec.shape)} from the config`,
        {
          file: files[fi].path,
          tensor: name,
        },
      );
  }
  for (const [name, [fi]] of tensors)
    if (!expected.has(name))
      throw new CheckpointError(`not part of a ${config.numLayers}-layer gpt-oss checkpoint in the ${layout} layout`, {
        file: files[fi].path,
        tensor: name,
      });
  return { dir, layout, config, files, names: tensorNames(config, layout), tensors };
}
