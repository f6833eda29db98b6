// Bad checkpoints get a CheckpointError naming the file and tensor (or an UnsupportedError for a
// config this engine does not implement), never a crash or a silent wrong answer.
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { CheckpointError, loadModel, UnsupportedError } from '../lib/index.js';
import { copyFixture, fixtures, mutateHeader, tmpDir } from './helpers/checkpoint.js';

async function loadError(dir: string): Promise<unknown> {
  try {
    const m = await loadModel(dir);
    m.dispose();
  } catch (e) {
    return e;
  }
  throw new Error('loadModel succeeded');
}

const original = () => copyFixture('tiny-b/original');
const st = (dir: string) => join(dir, 'model.safetensors');

describe('loading a bad checkpoint', () => {
  it('a missing tensor raises ERR_BAD_CHECKPOINT naming the tensor', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => delete h['block.1.attn.sinks']);
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'block.1.attn.sinks' });
    expect((e as Error).message).toMatch(/missing/);
  });

  it('a tensor of the wrong shape raises an error naming the file, tensor and both shapes', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => {
      h['block.0.attn.qkv.weight'].shape = [64, 384]; // same bytes, transposed
    });
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: st(dir), tensor: 'block.0.attn.qkv.weight' });
    expect((e as Error).message).toContain('[64,384], expected [384,64]');
  });

  it('a tensor of the wrong dtype raises an error naming it', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => {
      h['block.2.mlp.mlp2_bias'].dtype = 'F16';
    });
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'block.2.mlp.mlp2_bias' });
    expect((e as Error).message).toContain('dtype F16, expected BF16');
  });

  it('a header length past the end of the file is refused before anything is read', async () => {
    const dir = original();
    const buf = readFileSync(st(dir));
    buf.writeBigUInt64LE(BigInt(buf.length), 0);
    writeFileSync(st(dir), buf);
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: st(dir) });
    expect((e as Error).message).toMatch(/header length \d+ runs past the end/);
  });

  it('a header that is not JSON is refused', async () => {
    const dir = original();
    const buf = readFileSync(st(dir));
    buf.write('}', 8);
    writeFileSync(st(dir), buf);
    expect(await loadError(dir)).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: st(dir) });
  });

  it('offsets outside the data raise an error naming the tensor', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => {
      const t = h['norm.scale'];
      const len = t.data_offsets[1] - t.data_offsets[0];
      t.data_offsets = [10_000_000, 10_000_000 + len];
    });
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'norm.scale' });
    expect((e as Error).message).toMatch(/run past the end/);
  });

  it('offsets that disagree with the shape raise an error', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => {
      h['norm.scale'].data_offsets[1] += 2;
    });
    expect(await loadError(dir)).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'norm.scale' });
  });

  it('overlapping tensors raise an error naming both', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => {
      // block.1's attention norm now aliases block.0's
      h['block.1.attn.norm.scale'].data_offsets = [...h['block.0.attn.norm.scale'].data_offsets];
    });
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(CheckpointError);
    expect((e as Error).message).toMatch(/overlaps tensor block\.[01]\.attn\.norm\.scale/);
  });

  it('a truncated file raises an error naming the tensor cut off', async () => {
    const dir = original();
    const size = readFileSync(st(dir)).length;
    truncateSync(st(dir), size - 100);
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: st(dir) });
    expect((e as CheckpointError).tensor).toBeTruthy();
    expect((e as Error).message).toMatch(/file truncated/);
  });

  it('a tensor the config does not imply (an extra layer) is refused', async () => {
    const dir = original();
    mutateHeader(st(dir), (h) => {
      h['block.3.attn.sinks'] = { dtype: 'BF16', shape: [0], data_offsets: [0, 0] };
    });
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'block.3.attn.sinks' });
    expect((e as Error).message).toContain('3-layer');
  });

  it('an unknown config key is refused with the likely intended key', async () => {
    const dir = original();
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.sliding_windw = 16;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(UnsupportedError);
    expect((e as Error).message).toContain('"sliding_windw" (did you mean "sliding_window"?)');
    // ...and loads when asked to ignore it
    const m = await loadModel(dir, { strictConfig: false });
    m.dispose();
  });

  it('config values that change the arithmetic and are not implemented are refused', async () => {
    for (const change of [
      (c: Record<string, unknown>) => ((c.rope_scaling as Record<string, unknown>).truncate = true),
      (c: Record<string, unknown>) => ((c.rope_scaling as Record<string, unknown>).rope_type = 'linear'),
      (c: Record<string, unknown>) => (c.tie_word_embeddings = true),
      (c: Record<string, unknown>) => ((c.layer_types as string[])[0] = 'full_attention'),
      (c: Record<string, unknown>) => ((c.quantization_config as Record<string, unknown>).quant_method = 'gptq'),
    ]) {
      const dir = copyFixture('tiny-b/hf');
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      change(cfg);
      writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
      const e = await loadError(dir);
      expect(e).toBeInstanceOf(UnsupportedError);
      expect((e as Error).message).toContain(join(dir, 'config.json'));
    }
  });

  it('a config with a missing or malformed required key names it', async () => {
    const dir = original();
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.num_experts = 'four';
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: join(dir, 'config.json') });
    expect((e as Error).message).toContain('"num_experts"');
  });

  it('a directory that is not a checkpoint says so', async () => {
    const empty = tmpDir();
    expect(await loadError(empty)).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: empty });
    expect(((await loadError(empty)) as Error).message).toMatch(/no config\.json/);
    expect(await loadError(join(empty, 'nope'))).toMatchObject({ code: 'ERR_BAD_CHECKPOINT' });
    const file = join(empty, 'file');
    writeFileSync(file, 'x');
    expect(((await loadError(file)) as Error).message).toMatch(/not a directory/);
    writeFileSync(join(empty, 'config.json'), readFileSync(join(fixtures, 'tiny-b', 'original', 'config.json')));
    expect(((await loadError(empty)) as Error).message).toMatch(/no \.safetensors files/);
  });

  it('a shard named by the index but absent is reported', async () => {
    const dir = copyFixture('tiny-b/hf');
    rmSync(join(dir, 'model-00001-of-00001.safetensors'));
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: join(dir, 'model-00001-of-00001.safetensors') });
  });

  it('an index that places a tensor in the wrong shard is reported', async () => {
    const dir = copyFixture('tiny-b/hf');
    const idxFile = join(dir, 'model.safetensors.index.json');
    const idx = JSON.parse(readFileSync(idxFile, 'utf8'));
    const [name, shard] = Object.entries(idx.weight_map as Record<string, string>)[0];
    idx.weight_map[name] = shard.includes('00000')
      ? 'model-00001-of-00001.safetensors'
      : 'model-00000-of-00001.safetensors';
    writeFileSync(idxFile, JSON.stringify(idx));
    expect(await loadError(dir)).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: name });
  });

  it('an index naming a path outside the directory is refused', async () => {
    const dir = copyFixture('tiny-b/hf');
    const idxFile = join(dir, 'model.safetensors.index.json');
    const idx = JSON.parse(readFileSync(idxFile, 'utf8'));
    idx.weight_map['model.norm.weight'] = '../../etc/passwd';
    writeFileSync(idxFile, JSON.stringify(idx));
    expect(await loadError(dir)).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'model.norm.weight' });
  });
});

describe('hostile checkpoint files are refused before anything is sized from them', () => {
  const withConfig = (layout: 'original' | 'hf', change: (c: Record<string, unknown>) => void) => {
    const dir = copyFixture(`tiny-b/${layout}`);
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    change(cfg);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    return dir;
  };

  it('every numeric config value is checked against sane bounds before anything is sized from it', async () => {
    const cases: ['original' | 'hf', (c: Record<string, unknown>) => void, RegExp][] = [
      [
        'original',
        (c) => (c.sliding_window = 1e12),
        /"sliding_window" must be an integer in \[1, \d+\], got 1000000000000/,
      ],
      ['hf', (c) => (c.sliding_window = 200_000), /sliding_window 200000 exceeds the 131072 positions/],
      [
        'hf',
        (c) => (c.max_position_embeddings = -5),
        /"max_position_embeddings" must be an integer in \[1, \d+\], got -5/,
      ],
      ['hf', (c) => (c.max_position_embeddings = 0), /"max_position_embeddings"/],
      ['hf', (c) => (c.max_position_embeddings = 2.5), /"max_position_embeddings"/],
      [
        'original',
        (c) => (c.num_hidden_layers = 1e9),
        /"num_hidden_layers" must be an integer in \[1, 1024\], got 1000000000/,
      ],
      ['hf', (c) => (c.num_hidden_layers = 1e9), /"num_hidden_layers"/],
      ['hf', (c) => (c.vocab_size = 2 ** 40), /"vocab_size"/],
      ['original', (c) => (c.head_dim = 1e6), /"head_dim"/],
      ['original', (c) => (c.rope_scaling_factor = 5000), /positions, over the \d+ supported/],
      // Floats past any model's: they would reach the arithmetic as inf or NaN.
      ['original', (c) => (c.rope_scaling_factor = 1e300), /"rope_scaling_factor" must be at most 10000, got 1e\+300/],
      ['original', (c) => (c.rope_theta = 1e300), /"rope_theta" must be at most 1000000000000, got 1e\+300/],
      ['original', (c) => (c.rope_ntk_beta = 1e300), /"rope_ntk_beta" must be at most/],
      ['hf', (c) => (c.rms_norm_eps = 1e300), /"rms_norm_eps" must be at most 1, got 1e\+300/],
      ['hf', (c) => (c.swiglu_limit = 1e300), /"swiglu_limit" must be at most 10000/],
      ['hf', (c) => (c.swiglu_alpha = 1e300), /"swiglu_alpha" must be at most 1000/],
      [
        'hf',
        (c) => ((c.rope_scaling as Record<string, unknown>).factor = 1e300),
        /"rope_scaling.factor" must be at most 10000/,
      ],
      ['hf', (c) => ((c.rope_scaling as Record<string, unknown>).beta_slow = 1e300), /"rope_scaling.beta_slow"/],
      ['original', (c) => (c.rope_theta = -1), /"rope_theta" must be a finite number > 0/],
      ['hf', (c) => (c.rms_norm_eps = 0), /"rms_norm_eps"/],
      ['hf', (c) => (c.swiglu_limit = -7), /"swiglu_limit"/],
    ];
    for (const [layout, change, message] of cases) {
      const dir = withConfig(layout, change);
      const e = await loadError(dir);
      expect(e, String(message)).toBeInstanceOf(CheckpointError);
      expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: join(dir, 'config.json') });
      expect((e as Error).message).toMatch(message);
    }
    // A layer count within bounds but not what the tensors hold names the first tensor missing.
    const e = await loadError(withConfig('original', (c) => (c.num_hidden_layers = 1000)));
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', tensor: 'block.3.attn.norm.scale' });
  });

  it('tensor names such as __proto__ and constructor are ordinary (unknown) names', async () => {
    for (const name of ['__proto__', 'constructor', 'toString']) {
      const dir = copyFixture('tiny-b/hf');
      const shard = join(dir, 'model-00000-of-00001.safetensors');
      mutateHeader(shard, (h) => {
        // Assignment would set the prototype; the header must hold it as an own key, as JSON.parse does.
        Object.defineProperty(h, name, {
          value: { dtype: 'BF16', shape: [0], data_offsets: [0, 0] },
          enumerable: true,
          writable: true,
          configurable: true,
        });
      });
      const e = await loadError(dir);
      expect(e, name).toBeInstanceOf(CheckpointError);
      expect(e).toMatchObject({ file: shard, tensor: name });
      expect((e as Error).message).toMatch(/not part of a 3-layer gpt-oss checkpoint/);
    }
    const dir = copyFixture('tiny-b/original');
    mutateHeader(st(dir), (h) => {
      h['norm.scale'].dtype = 'toString';
    });
    expect(((await loadError(dir)) as Error).message).toMatch(/unknown dtype "toString"/);
  });

  it('a header longer than any gpt-oss header is refused before it is read', async () => {
    const dir = original();
    // 99 MB (under the 100 MB the format allows), in a sparse file so the test writes nothing.
    const fd = openSync(st(dir), 'r+');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(99_000_000n);
    writeSync(fd, len, 0, 8, 0);
    closeSync(fd);
    truncateSync(st(dir), 100_000_000);
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: st(dir) });
    expect((e as Error).message).toMatch(/header length 99000000 exceeds the \d+ bytes a header may take/);
  });

  it('all shards together get one header budget', async () => {
    const { MAX_HEADER_BYTES } = await import('../lib/checkpoint/safetensors.js');
    const dir = copyFixture('tiny-b/hf');
    // Each shard's header alone is under the bound; the two together are not.
    for (const shard of ['model-00000-of-00001.safetensors', 'model-00001-of-00001.safetensors'])
      mutateHeader(join(dir, shard), (h) => {
        (h as Record<string, unknown>).__metadata__ = { pad: 'x'.repeat(Math.ceil(MAX_HEADER_BYTES * 0.6)) };
      });
    const e = await loadError(dir);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file: join(dir, 'model-00001-of-00001.safetensors') });
    expect((e as Error).message).toMatch(/exceeds the \d+ bytes a header may take/);
  });
});

describe('finding the layout', () => {
  it('a repo root holding only original/ loads the original layout from there', async () => {
    const root = tmpDir();
    mkdirSync(join(root, 'x'));
    renameSync(copyFixture('tiny-b/original'), join(root, 'original'));
    const m = await loadModel(root);
    expect(m.layout).toBe('original');
    expect(m.dir).toBe(join(root, 'original'));
    m.dispose();
  });
});
