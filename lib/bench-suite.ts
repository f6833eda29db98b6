// `gptoss bench suite` and its parts: one model (a checkpoint or synthetic weights of the real
// shapes), the ceilings measured once, then kernels, decode, prefill and memory as asked; the
// result is one BenchRun (lib/bench-run.ts) for `gptoss bench report`.
import { runKernelBench, measureCeilings } from './bench-kernels.js';
import { type BenchRun, newRun } from './bench-run.js';
import { memoryResult, type Progress, runDecodeSweep, runPrefillSweep } from './bench-sweep.js';
import { InvalidArgumentError } from './errors.js';
import { openBenchModel } from './bench.js';
import type { Device } from './model.js';
import type { Preset } from './synthetic.js';

export const PARTS = ['kernels', 'decode', 'prefill', 'memory'] as const;
export type Part = (typeof PARTS)[number];

export interface SuiteOptions {
  model?: string;
  synthetic?: Preset;
  layers?: number;
  device?: Device;
  parts?: readonly Part[];
  /** Kernel part: tokens per call (1 = decode shapes) and the decode context of attention. */
  kernelTokens?: number[];
  kernelContext?: number;
  /** Decode part. */
  batches?: number[];
  contexts?: number[];
  steps?: number;
  /** KV bytes a decode point may allocate (default half the free memory). */
  memoryBudget?: number;
  /** Prefill part. */
  prompts?: number[];
  repeats?: number;
  command?: string;
  log?: (line: string) => void;
  progress?: Progress;
}

/**
 * The grids when none is given. On a GPU the issue's full grid; on the CPU backend a grid that
 * finishes in minutes on a small machine (pass --batch / --context / --prompt for more).
 */
export function defaultGrid(device: Device) {
  return device === 'cuda'
    ? { batches: [1, 2, 4, 8, 16, 32, 64, 128, 256], contexts: [0, 1024, 8192, 32768], prompts: [1024, 8192, 32768] }
    : { batches: [1, 4, 16, 64], contexts: [0, 1024, 8192], prompts: [1024] };
}

export async function runSuite(o: SuiteOptions): Promise<BenchRun> {
  const log = o.log ?? (() => {});
  const device = o.device ?? 'cpu';
  const parts = o.parts ?? PARTS;
  if (o.model && o.synthetic) throw new InvalidArgumentError('pass a model or a synthetic preset, not both');
  const grid = defaultGrid(device);
  const { model, label } = await openBenchModel({ model: o.model, synthetic: o.synthetic, layers: o.layers, device, log });
  const rssAfterLoad = process.memoryUsage().rss;
  try {
    const run = newRun(o.command ?? `gptoss bench ${parts.join(' ')}`, label, device);
    log('measuring the ceilings (host read bandwidth, dense bf16 matmul rate)...');
    const ceilings = await measureCeilings(model.config);
    run.ceilings = ceilings;
    if (parts.includes('kernels')) {
      log('kernels...');
      run.kernels = await runKernelBench({ config: model.config, tokens: o.kernelTokens, context: o.kernelContext, ceilings, progress: o.progress });
    }
    if (parts.includes('decode')) {
      log('decode sweep...');
      run.decode = await runDecodeSweep({
        model, batches: o.batches ?? grid.batches, contexts: o.contexts ?? grid.contexts, steps: o.steps ?? 8, ceilings,
        memoryBudget: o.memoryBudget, progress: o.progress,
      });
    }
    if (parts.includes('prefill')) {
      log('prefill sweep...');
      run.prefill = await runPrefillSweep({ model, prompts: o.prompts ?? grid.prompts, repeats: o.repeats ?? 2, ceilings, progress: o.progress });
    }
    if (parts.includes('memory')) run.memory = memoryResult(model, rssAfterLoad);
    return run;
  } finally {
    model.dispose();
  }
}

const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const pct = (x: number) => `${f(x * 100)}%`;

/** The run as plain-text tables for a terminal. */
export function formatRun(r: BenchRun): string {
  const lines: string[] = [`${r.model} on ${r.device} (${r.fingerprint.gpu ?? r.fingerprint.cpu}), commit ${r.fingerprint.commit}`];
  if (r.ceilings)
    lines.push(`ceilings: read ${f(r.ceilings.readGBps.value)} GB/s, dense ${f(r.ceilings.denseGFLOPs.value)} GFLOP/s (${r.ceilings.denseKernel})`);
  const table = (head: string[], rows: string[][]) => {
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    lines.push('', head.map((h, i) => h.padEnd(w[i])).join('  '), ...rows.map((r) => r.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ')));
  };
  if (r.kernels)
    table(['op', 'instance', 'T', 'ms', 'GB/s', 'GFLOP/s', 'bound', 'of roof'],
      r.kernels.map((k) => [k.op, k.name, String(k.tokens), f(k.ms.value, 3), f(k.GBps), f(k.GFLOPs), k.bound, pct(k.ratio)]));
  if (r.decode) {
    table(['decode batch', 'context', 'tokens/s', 'ms/token', 'GB/step', 'GFLOP/step', 'bound', 'roofline tok/s', 'ratio'],
      r.decode.points.map((p) => [String(p.batch), String(p.context), f(p.tokensPerSecond, 2), f(p.msPerOutputToken), f(p.bytesPerStep / 1e9, 3), f(p.flopsPerStep / 1e9), p.bound, f(p.rooflineTokensPerSecond, 2), pct(p.ratio)]));
    for (const s of r.decode.skipped) lines.push(`skipped batch ${s.batch}, context ${s.context}: ${s.reason}`);
  }
  if (r.prefill)
    table(['prefill tokens', '', 'tokens/s', 'seconds', 'GFLOP/s', 'of dense'],
      r.prefill.map((p) => [String(p.tokens), '', f(p.tokensPerSecond), f(p.seconds.value, 2), f(p.GFLOPs), pct(p.ratioToDense)]));
  if (r.memory) {
    const m = r.memory;
    lines.push('', `memory: weights ${f(m.weightsBytes / 1e9, 2)} GB, KV ${f(m.kvBytesPerToken / 1e3)} kB/token (${m.kvDType}), RSS after load ${f(m.rssAfterLoadBytes / 1e9, 2)} GB, peak ${f(m.peakRssBytes / 1e9, 2)} GB`);
    lines.push(`KV per sequence: ${m.kvBytesAt.map((k) => `${k.context} tokens ${f(k.bytes / 1e9, 3)} GB`).join(', ')}`);
  }
  return lines.join('\n');
}
