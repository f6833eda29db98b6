// `gptoss bench suite` and its parts: one model (a checkpoint or synthetic weights of the real
// shapes), the ceilings measured once, then kernels, decode, prefill and memory as asked; the
// result is one BenchRun (lib/bench/run.ts) for `gptoss bench report`.
import { runKernelBench, measureCeilings } from './kernels.js';
import { type BenchRun, fmt, memoryLine, newRun, runTables, textTable } from './run.js';
import { memoryResult, type Progress, runDecodeSweep, runPrefillSweep } from './sweep.js';
import { InvalidArgumentError } from '../errors.js';
import { openBenchModel } from './model.js';
import type { Device } from '../backend/device.js';
import type { Preset } from '../engine/synthetic.js';

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
 * The grids when none is given. On a GPU the full grid; on the CPU backend a grid that
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
  const { model, label } = await openBenchModel({
    model: o.model,
    synthetic: o.synthetic,
    layers: o.layers,
    device,
    log,
  });
  const rssAfterLoad = process.memoryUsage().rss;
  try {
    const run = newRun(o.command ?? `gptoss bench ${parts.join(' ')}`, label, device);
    log('measuring the ceilings (host read bandwidth, dense bf16 matmul rate)...');
    const ceilings = await measureCeilings(model.config);
    run.ceilings = ceilings;
    if (parts.includes('kernels')) {
      log('kernels...');
      run.kernels = await runKernelBench({
        config: model.config,
        tokens: o.kernelTokens,
        context: o.kernelContext,
        ceilings,
        progress: o.progress,
      });
    }
    if (parts.includes('decode')) {
      log('decode sweep...');
      run.decode = await runDecodeSweep({
        model,
        batches: o.batches ?? grid.batches,
        contexts: o.contexts ?? grid.contexts,
        steps: o.steps ?? 8,
        ceilings,
        memoryBudget: o.memoryBudget,
        progress: o.progress,
      });
    }
    if (parts.includes('prefill')) {
      log('prefill sweep...');
      run.prefill = await runPrefillSweep({
        model,
        prompts: o.prompts ?? grid.prompts,
        repeats: o.repeats ?? 2,
        ceilings,
        progress: o.progress,
      });
    }
    if (parts.includes('memory')) run.memory = memoryResult(model, rssAfterLoad);
    return run;
  } finally {
    model.dispose();
  }
}

/** The run as plain-text tables for a terminal. */
export function formatRun(r: BenchRun): string {
  const lines: string[] = [
    `${r.model} on ${r.device} (${r.fingerprint.gpu ?? r.fingerprint.cpu}), commit ${r.fingerprint.commit}`,
  ];
  if (r.ceilings)
    lines.push(
      `ceilings: read ${fmt(r.ceilings.readGBps.value)} GB/s, dense ${fmt(r.ceilings.denseGFLOPs.value)} GFLOP/s (${r.ceilings.denseKernel})`,
    );
  for (const t of runTables(r)) {
    if (t.title === 'Memory') lines.push('', `memory: ${memoryLine(r.memory!)}`);
    lines.push('', textTable(t));
    if (t.title === 'Decode')
      for (const s of r.decode!.skipped) lines.push(`skipped batch ${s.batch}, context ${s.context}: ${s.reason}`);
  }
  return lines.join('\n');
}
