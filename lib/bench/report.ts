// `gptoss bench report`: results files in, one self-contained HTML page (charts as inline SVG from
// Vega-Lite, rendered in Node without a browser) and a Markdown summary out. With two runs, every
// figure they share is compared, and a change counts only beyond the noise of its repeated samples.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

import { placeKernel } from './kernels.js';
import {
  type BenchRun,
  type DecodePoint,
  decodePoint,
  fmt,
  type KernelResult,
  memoryLine,
  type PrefillPoint,
  prefillPoint,
  runTables,
  type Stat,
  stat,
  validateRun,
} from './run.js';
import { InvalidArgumentError } from '../errors.js';

/**
 * Runs merged when they come from one commit, device and machine: parts run separately combine,
 * and a figure measured in several runs of the same model pools their samples, so its noise
 * includes the machine's drift between runs (repeat a run to compare two commits with confidence).
 */
export interface RunSet {
  key: string;
  label: string;
  date: string;
  files: string[];
  /** Runs pooled into the set's figures (runs of another model only add parts). */
  runs: number;
  run: BenchRun;
  /** What of these files the set does not show, and why (a part measured twice that cannot pool). */
  leftOut: string[];
}

const pool = (a: Stat, b: Stat): Stat => stat([...a.samples, ...b.samples]);

// What each repeated figure measures: the key two runs (or two repeats) are matched by.
const kernelKey = (k: KernelResult) => `kernel ${k.op} ${k.name} T=${k.tokens}`;
const decodeKey = (p: DecodePoint) => `decode batch ${p.batch} context ${p.context}`;
const prefillKey = (p: PrefillPoint) => `prefill ${p.tokens} tokens`;

/** Pools `from`'s samples of `field` into the matching items of `into`; new items are added. */
function poolList<T extends object, F extends keyof T>(into: T[], from: T[], key: (x: T) => string, field: F): void {
  for (const x of from) {
    const have = into.find((y) => key(y) === key(x));
    if (have) have[field] = pool(have[field] as Stat, x[field] as Stat) as T[F];
    else into.push(structuredClone(x));
  }
}

function poolPart(into: BenchRun, from: BenchRun, part: 'ceilings' | 'kernels' | 'decode' | 'prefill'): void {
  if (part === 'ceilings') {
    const c = into.ceilings!,
      d = from.ceilings!;
    into.ceilings = { ...c, readGBps: pool(c.readGBps, d.readGBps), denseGFLOPs: pool(c.denseGFLOPs, d.denseGFLOPs) };
  } else if (part === 'kernels') poolList(into.kernels!, from.kernels!, kernelKey, 'ms');
  else if (part === 'decode') poolList(into.decode!.points, from.decode!.points, decodeKey, 'stepMs');
  else poolList(into.prefill!, from.prefill!, prefillKey, 'seconds');
}

/** Figures derived from pooled medians and ceilings, computed again as the suite does. */
function rederive(run: BenchRun): void {
  const c = run.ceilings;
  if (!c) return;
  run.kernels = run.kernels?.map((k) => placeKernel(k, k.ms.samples, c));
  if (run.decode)
    run.decode.points = run.decode.points.map((p) =>
      decodePoint(p.batch, p.context, p.stepMs, p.bytesPerStep, p.flopsPerStep, c),
    );
  run.prefill = run.prefill?.map((p) => prefillPoint(p.tokens, p.seconds, p.flops, c));
}

export function mergeRuns(runs: { file: string; run: BenchRun }[]): RunSet[] {
  const sets = new Map<string, RunSet>();
  // Per set, the file each part shown comes from.
  const origin = new Map<string, Map<string, string>>();
  const rederived = new Set<string>();
  for (const { file, run } of [...runs].sort((a, b) => a.run.date.localeCompare(b.run.date))) {
    const machine = run.fingerprint.gpu ?? run.fingerprint.cpu;
    const key = `${run.fingerprint.commit}|${run.device}|${machine}`;
    const have = sets.get(key);
    if (!origin.has(key)) origin.set(key, new Map());
    for (const part of ['kernels', 'decode', 'prefill', 'memory', 'serve'] as const)
      if (run[part] !== undefined && !origin.get(key)!.has(part)) origin.get(key)!.set(part, file);
    if (!have) {
      sets.set(key, {
        key,
        label: `${run.fingerprint.commit} ${run.date.slice(0, 16).replace('T', ' ')}`,
        date: run.date,
        files: [file],
        runs: 1,
        run: structuredClone(run),
        leftOut: [],
      });
      continue;
    }
    have.files.push(file);
    const sameModel = have.run.model.split('; ').includes(run.model);
    if (!sameModel) have.run.model += `; ${run.model}`;
    let pooled = false;
    for (const part of ['ceilings', 'kernels', 'decode', 'prefill', 'memory', 'serve'] as const) {
      if (run[part] === undefined) continue;
      if (have.run[part] === undefined)
        (have.run as unknown as Record<string, unknown>)[part] = structuredClone(run[part]);
      else if (part === 'ceilings') {
        // The machine's ceilings, whatever the model: they pool.
        poolPart(have.run, run, part);
        rederived.add(key);
      } else if (sameModel && part !== 'memory' && part !== 'serve') {
        poolPart(have.run, run, part);
        pooled = true;
      } else {
        // One of each per set: the newer is shown, and the older said to be left out.
        have.leftOut.push(
          `${part} of ${origin.get(key)!.get(part)}: replaced by that of ${file}, the newer run of this commit and machine (${
            sameModel ? `${part} figures are not pooled` : `another model, ${run.model}`
          })`,
        );
        (have.run as unknown as Record<string, unknown>)[part] = structuredClone(run[part]);
        origin.get(key)!.set(part, file);
      }
    }
    if (pooled) have.runs++;
    have.date = run.date;
  }
  for (const set of sets.values()) {
    if (set.runs > 1 || rederived.has(set.key)) rederive(set.run);
    if (set.runs > 1) set.label += ` (${set.runs} runs pooled)`;
  }
  return [...sets.values()].sort((a, b) => a.date.localeCompare(b.date));
}

// --- Comparison -------------------------------------------------------------------------------

export interface Change {
  figure: string;
  unit: string;
  base: number;
  current: number;
  /** current / base - 1 of the figure as reported (for times: positive = slower). */
  change: number;
  /** Two standard errors of the difference, relative to the base: changes within it are noise. */
  noise: number;
  verdict: 'better' | 'worse' | 'within noise';
  /** Which way is better for this figure: lower for times, higher for rates. */
  better: 'lower' | 'higher';
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const variance = (xs: number[]) =>
  xs.length < 2 ? 0 : xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1);

function compareStat(
  figure: string,
  unit: string,
  base: { value: number; samples: number[] },
  cur: { value: number; samples: number[] },
  lowerIsBetter: boolean,
): Change | undefined {
  // A figure with nothing measured on either side (0 tokens/s, no TTFT) has no relative change.
  if (!(base.value > 0 && cur.value > 0 && Number.isFinite(base.value) && Number.isFinite(cur.value))) return undefined;
  // A figure with one sample has no spread of its own: it borrows the other's, or a 2% floor.
  const vb = variance(base.samples),
    vc = variance(cur.samples);
  const se = Math.sqrt((vb || vc) / base.samples.length + (vc || vb) / cur.samples.length);
  const noise = Math.max(0.02, (2 * se) / base.value);
  const change = cur.value / base.value - 1;
  const better = lowerIsBetter ? change < 0 : change > 0;
  return {
    figure,
    unit,
    base: base.value,
    current: cur.value,
    change,
    noise,
    verdict: Math.abs(change) <= noise ? 'within noise' : better ? 'better' : 'worse',
    better: lowerIsBetter ? 'lower' : 'higher',
  };
}

/** Changes of the figures in `cur` that `base` measured too (times: lower is better). */
function compareList<T>(
  base: T[] | undefined,
  cur: T[] | undefined,
  key: (x: T) => string,
  field: (x: T) => Stat,
  unit: string,
): (Change | undefined)[] {
  return (cur ?? []).map((x) => {
    const b = base?.find((y) => key(y) === key(x));
    return b && compareStat(key(x), unit, field(b), field(x), true);
  });
}

export function compareRuns(base: BenchRun, cur: BenchRun): Change[] {
  const found: (Change | undefined)[] = [];
  if (base.ceilings && cur.ceilings) {
    found.push(compareStat('ceiling: read bandwidth', 'GB/s', base.ceilings.readGBps, cur.ceilings.readGBps, false));
    found.push(
      compareStat('ceiling: dense matmul', 'GFLOP/s', base.ceilings.denseGFLOPs, cur.ceilings.denseGFLOPs, false),
    );
  }
  found.push(...compareList(base.kernels, cur.kernels, kernelKey, (k) => k.ms, 'ms'));
  found.push(...compareList(base.decode?.points, cur.decode?.points, decodeKey, (p) => p.stepMs, 'ms/step'));
  found.push(...compareList(base.prefill, cur.prefill, prefillKey, (p) => p.seconds, 's'));
  for (const l of cur.serve ?? []) {
    const b = base.serve?.find((x) => x.concurrency === l.concurrency && x.requestRate === l.requestRate);
    if (!b) continue;
    // One figure per level: no samples, so the noise floor applies.
    const one = (v: number) => ({ value: v, samples: [v] });
    const level = l.requestRate !== undefined ? `${l.requestRate} req/s` : `concurrency ${l.concurrency}`;
    found.push(
      compareStat(
        `serve ${level}: output tokens/s`,
        'tokens/s',
        one(b.outputTokensPerSecond),
        one(l.outputTokensPerSecond),
        false,
      ),
    );
    if (b.ttftMs.p50 !== null && l.ttftMs.p50 !== null)
      found.push(compareStat(`serve ${level}: TTFT p50`, 'ms', one(b.ttftMs.p50), one(l.ttftMs.p50), true));
  }
  return found.filter((c): c is Change => c !== undefined);
}

// --- Charts -----------------------------------------------------------------------------------

export interface Chart {
  id: string;
  title: string;
  svg: string;
  /** The Vega-Lite spec it was rendered from (its data included). */
  spec: TopLevelSpec;
}

async function svgOf(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const WIDTH = 520,
  HEIGHT = 300;

/** Labels like "batch 16" or "T=128" in the order of their numbers, not as text (1, 4, 16, 64). */
export const numericOrder = (labels: Iterable<string>): string[] =>
  [...new Set(labels)].sort((a, b) => {
    const na = Number(/-?\d+(\.\d+)?/.exec(a)?.[0] ?? NaN),
      nb = Number(/-?\d+(\.\d+)?/.exec(b)?.[0] ?? NaN);
    return Number.isNaN(na) || Number.isNaN(nb) || na === nb ? a.localeCompare(b) : na - nb;
  });

/** Legends wide enough for their labels (Vega-Lite cuts them at 160 pixels). */
const LEGEND = { labelLimit: 400 } as const;

/** What a share of the roofline above 100% means, said on the charts that show one. */
const CACHE_NOTE_LINES = [
  'Above 100% of a memory roof: the op ran from cache (the roof counts every byte as',
  'read from memory; a working set that fits in cache is read faster than that).',
  'Above 100% of the compute roof: faster than the dense matmul measured as the ceiling.',
];
export const CACHE_NOTE = CACHE_NOTE_LINES.join(' ');

function rooflineSpec(run: BenchRun): TopLevelSpec {
  const c = run.ceilings!;
  const ks = run.kernels!.filter((k) => k.flops > 0 && k.GFLOPs > 0);
  const xs = ks.map((k) => k.intensity);
  const lo = Math.min(...xs, 0.05) / 2,
    hi = Math.max(...xs, 200) * 2;
  const ridge = c.denseGFLOPs.value / c.readGBps.value;
  const roof = [lo, Math.max(lo, Math.min(ridge, hi)), hi].map((x) => ({
    intensity: x,
    GFLOPs: Math.min(c.denseGFLOPs.value, x * c.readGBps.value),
  }));
  return {
    width: WIDTH,
    height: HEIGHT,
    layer: [
      {
        data: { values: roof },
        mark: { type: 'line', color: '#444', strokeDash: [6, 3] },
        encoding: { x: { field: 'intensity', type: 'quantitative' }, y: { field: 'GFLOPs', type: 'quantitative' } },
      },
      {
        data: { values: ks.map((k) => ({ ...k, T: `T=${k.tokens}` })) },
        mark: { type: 'point', filled: true, size: 70 },
        encoding: {
          x: {
            field: 'intensity',
            type: 'quantitative',
            scale: { type: 'log', domain: [lo, hi] },
            title: 'arithmetic intensity (operations / byte)',
          },
          y: { field: 'GFLOPs', type: 'quantitative', scale: { type: 'log' }, title: 'achieved GFLOP/s' },
          color: { field: 'op', type: 'nominal', title: 'op', legend: LEGEND },
          shape: {
            field: 'T',
            type: 'nominal',
            title: 'tokens',
            scale: { domain: numericOrder(ks.map((k) => `T=${k.tokens}`)) },
          },
        },
      },
    ],
    ...(ks.some((k) => k.ratio > 1)
      ? {
          title: {
            text: 'points above the roof: memory-bound ops ran from cache',
            subtitle: CACHE_NOTE_LINES,
            fontSize: 12,
          },
        }
      : {}),
  } as TopLevelSpec;
}

function kernelRatioSpec(run: BenchRun): TopLevelSpec {
  const y = { field: 'kernel', type: 'nominal', sort: null, title: null, axis: { labelLimit: 320 } } as const;
  const rows = run.kernels!.map((k) => ({
    kernel: `${k.op} ${k.name} T=${k.tokens}`,
    ratio: k.ratio,
    bound: k.bound,
    note: k.ratio <= 1 ? '' : k.bound === 'memory' ? 'from cache' : 'above the measured dense rate',
  }));
  return {
    width: WIDTH,
    height: { step: 14 } as unknown as number,
    data: { values: rows },
    ...(rows.some((r) => r.ratio > 1)
      ? {
          title: {
            text: 'bars past the dashed 100% line: memory-bound ops ran from cache',
            subtitle: CACHE_NOTE_LINES,
            fontSize: 12,
          },
        }
      : {}),
    layer: [
      {
        mark: 'bar',
        encoding: {
          y,
          x: { field: 'ratio', type: 'quantitative', axis: { format: '%' }, title: 'achieved / attainable (roofline)' },
          color: { field: 'bound', type: 'nominal', title: 'bound by' },
        },
      },
      {
        data: { values: [{ x: 1 }] },
        mark: { type: 'rule', color: '#444', strokeDash: [4, 3] },
        encoding: { x: { field: 'x', type: 'quantitative' } },
      },
      {
        mark: { type: 'text', align: 'left', dx: 4, fontSize: 10 },
        encoding: { y, x: { field: 'ratio', type: 'quantitative' }, text: { field: 'note' } },
      },
    ],
  } as TopLevelSpec;
}

function decodeSpec(run: BenchRun, by: 'batch' | 'context'): TopLevelSpec {
  const other = by === 'batch' ? 'context' : 'batch';
  const rows = run.decode!.points.flatMap((p) => [
    { ...p, series: `${other} ${p[other]}`, kind: 'measured', value: p.tokensPerSecond },
    { ...p, series: `${other} ${p[other]}`, kind: 'roofline', value: p.rooflineTokensPerSecond },
  ]);
  return {
    width: WIDTH,
    height: HEIGHT,
    data: { values: rows },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: by,
        type: 'quantitative',
        scale: by === 'batch' ? { type: 'log', base: 2 } : { type: 'symlog', constant: 256 },
        axis: { values: [...new Set(run.decode!.points.map((p) => p[by]))] },
        title: by === 'batch' ? 'batch size (sequences)' : 'context (tokens)',
      },
      y: { field: 'value', type: 'quantitative', scale: { type: 'log' }, title: 'tokens/s (all sequences)' },
      color: {
        field: 'series',
        type: 'nominal',
        title: null,
        scale: { domain: numericOrder(rows.map((r) => r.series)) },
        legend: LEGEND,
      },
      // Measured: a solid line through circles; roofline: dashed, through triangles.
      strokeDash: {
        field: 'kind',
        type: 'nominal',
        title: null,
        scale: {
          domain: ['measured', 'roofline'],
          range: [
            [1, 0],
            [4, 3],
          ],
        },
      },
      shape: {
        field: 'kind',
        type: 'nominal',
        title: null,
        scale: { domain: ['measured', 'roofline'], range: ['circle', 'triangle-up'] },
      },
    },
  } as TopLevelSpec;
}

function prefillSpec(run: BenchRun): TopLevelSpec {
  return {
    width: WIDTH,
    height: HEIGHT,
    data: {
      values: run.prefill!.map((p) => ({
        prompt: String(p.tokens),
        tokensPerSecond: p.tokensPerSecond,
        ratio: p.ratioToDense,
      })),
    },
    layer: [
      {
        mark: 'bar',
        encoding: {
          x: { field: 'prompt', type: 'ordinal', sort: null, title: 'prompt tokens' },
          y: { field: 'tokensPerSecond', type: 'quantitative', title: 'prefill tokens/s' },
        },
      },
      {
        mark: { type: 'text', dy: -8 },
        encoding: {
          x: { field: 'prompt', type: 'ordinal', sort: null },
          y: { field: 'tokensPerSecond', type: 'quantitative' },
          text: { field: 'ratio', type: 'quantitative', format: '.1%' },
        },
      },
    ],
  } as TopLevelSpec;
}

/** Serving levels are concurrencies (closed loop) or offered request rates (open loop). */
function loadAxis(run: BenchRun) {
  const byRate = run.serve!.every((l) => l.requestRate !== undefined);
  const load = (l: NonNullable<BenchRun['serve']>[number]) => (byRate ? l.requestRate! : l.concurrency);
  const x = {
    field: 'load',
    type: 'quantitative',
    scale: { type: 'log', base: 2 },
    axis: { values: run.serve!.map(load) },
    title: byRate ? 'offered load (requests/s)' : 'concurrent clients',
  } as const;
  return { load, x };
}

function serveThroughputSpec(run: BenchRun): TopLevelSpec {
  const { load, x } = loadAxis(run);
  const rows = run.serve!.flatMap((l) => [
    { load: load(l), series: 'output tokens/s', value: l.outputTokensPerSecond },
    { load: load(l), series: 'input tokens/s', value: l.inputTokensPerSecond },
  ]);
  return {
    width: WIDTH,
    height: HEIGHT,
    data: { values: rows },
    mark: { type: 'line', point: true },
    encoding: {
      x,
      y: { field: 'value', type: 'quantitative', title: 'tokens/s' },
      color: { field: 'series', type: 'nominal', title: null, legend: LEGEND },
    },
  } as TopLevelSpec;
}

/** Goodput in its own unit, requests/s, on its own axis (it was drawn x100 beside tokens/s). */
function serveGoodputSpec(run: BenchRun): TopLevelSpec {
  const { load, x } = loadAxis(run);
  return {
    width: WIDTH,
    height: HEIGHT,
    data: { values: run.serve!.map((l) => ({ load: load(l), goodput: l.goodputRequestsPerSecond })) },
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: { x, y: { field: 'goodput', type: 'quantitative', title: 'goodput (requests/s)' } },
      },
      {
        mark: { type: 'text', dy: -10, fontSize: 10 },
        encoding: {
          x,
          y: { field: 'goodput', type: 'quantitative' },
          text: { field: 'goodput', type: 'quantitative', format: '.2f' },
        },
      },
    ],
  } as TopLevelSpec;
}

function latencySpec(run: BenchRun, which: 'ttftMs' | 'itlMs'): TopLevelSpec {
  const { load, x } = loadAxis(run);
  const rows = run.serve!.map((l) => ({ load: load(l), ...l[which] }));
  return {
    width: WIDTH,
    height: HEIGHT,
    data: { values: rows },
    layer: [
      {
        mark: { type: 'area', opacity: 0.25 },
        encoding: {
          x,
          y: {
            field: 'p50',
            type: 'quantitative',
            title: which === 'ttftMs' ? 'TTFT (ms)' : 'inter-token latency (ms)',
          },
          y2: { field: 'p99' },
        },
      },
      { mark: { type: 'line', point: true }, encoding: { x, y: { field: 'p50', type: 'quantitative' } } },
      { mark: { type: 'line', strokeDash: [4, 3] }, encoding: { x, y: { field: 'p90', type: 'quantitative' } } },
    ],
  } as TopLevelSpec;
}

function memorySpec(run: BenchRun): TopLevelSpec {
  const m = run.memory!;
  const rows = [
    { item: 'weights', GB: m.weightsBytes / 1e9 },
    ...m.kvBytesAt.map((k) => ({ item: `KV, one sequence at ${k.context}`, GB: k.bytes / 1e9 })),
    { item: 'resident after load', GB: m.rssAfterLoadBytes / 1e9 },
    { item: 'peak resident', GB: m.peakRssBytes / 1e9 },
  ];
  return {
    width: WIDTH,
    height: { step: 18 } as unknown as number,
    data: { values: rows },
    mark: 'bar',
    encoding: {
      y: { field: 'item', type: 'nominal', sort: null, title: null, axis: { labelLimit: 320 } },
      x: { field: 'GB', type: 'quantitative', title: 'GB (1e9 bytes)' },
    },
  } as TopLevelSpec;
}

/** A compared figure's row label, saying which way is better. */
export const changeLabel = (c: Change): string => `${c.figure} (${c.unit}; ${c.better} is better)`;

function compareSpec(changes: Change[]): TopLevelSpec {
  const rows = changes.map((c) => ({ ...c, figure: changeLabel(c), lo: -c.noise, hi: c.noise }));
  // Vega measures text by estimate in Node, generously: a limit that keeps the whole label.
  const y = { field: 'figure', type: 'nominal', sort: null, title: null, axis: { labelLimit: 640 } } as const;
  return {
    width: WIDTH,
    height: { step: 14 } as unknown as number,
    data: { values: rows },
    title: {
      text: 'Lower is better for times (ms, s), higher for rates (GB/s, GFLOP/s, tokens/s)',
      subtitle: [
        'each row says which; the change is of the figure as measured (+10% on a time is 10% slower)',
        'green: better, red: worse, grey band: within noise',
      ],
      fontSize: 12,
    },
    layer: [
      {
        mark: { type: 'rule', color: '#bbb', strokeWidth: 6 },
        encoding: { y, x: { field: 'lo', type: 'quantitative' }, x2: { field: 'hi' } },
      },
      {
        mark: { type: 'point', filled: true, size: 60 },
        encoding: {
          y,
          x: {
            field: 'change',
            type: 'quantitative',
            axis: { format: '+%' },
            title: 'change from baseline (grey: noise band)',
          },
          color: {
            field: 'verdict',
            type: 'nominal',
            scale: { domain: ['better', 'worse', 'within noise'], range: ['#2a9d4b', '#d1495b', '#888'] },
          },
        },
      },
    ],
  } as TopLevelSpec;
}

/** The charts of one run; `idPrefix` keeps the ids of several runs on one page apart. */
export async function chartsFor(run: BenchRun, changes?: Change[], idPrefix = ''): Promise<Chart[]> {
  const out: Chart[] = [];
  const add = async (id: string, title: string, spec: TopLevelSpec) =>
    out.push({ id: `${idPrefix}${id}`, title, svg: await svgOf(spec), spec });
  if (run.kernels?.length && run.ceilings) {
    await add('roofline', 'Roofline: every kernel against the measured ceilings', rooflineSpec(run));
    await add('kernel-ratios', 'Kernels: share of the attainable rate', kernelRatioSpec(run));
  }
  if (run.decode?.points.length) {
    await add('decode-batch', 'Decode tokens/s against batch size (dashed: roofline)', decodeSpec(run, 'batch'));
    await add(
      'decode-context',
      'Decode tokens/s against context length (dashed: roofline)',
      decodeSpec(run, 'context'),
    );
  }
  if (run.prefill?.length)
    await add('prefill', 'Prefill tokens/s (labels: share of the dense matmul rate)', prefillSpec(run));
  if (run.serve?.length) {
    await add('serve-throughput', 'Serving: token throughput against load', serveThroughputSpec(run));
    await add(
      'serve-goodput',
      'Serving: goodput, requests/s that met the TTFT and inter-token latency bounds',
      serveGoodputSpec(run),
    );
    await add(
      'serve-ttft',
      'Serving: time to first token (line p50, dashed p90, band p50-p99)',
      latencySpec(run, 'ttftMs'),
    );
    await add(
      'serve-itl',
      'Serving: inter-token latency (line p50, dashed p90, band p50-p99)',
      latencySpec(run, 'itlMs'),
    );
  }
  if (run.memory) await add('memory', 'Memory', memorySpec(run));
  if (changes?.length)
    await add(
      'comparison',
      'Change from the baseline run, per figure (lower is better for times, higher for rates)',
      compareSpec(changes),
    );
  return out;
}

// --- Markdown and HTML ------------------------------------------------------------------------

const signed = (x: number) => `${x >= 0 ? '+' : ''}${fmt(x * 100)}%`;

function mdTable(head: string[], rows: string[][]): string {
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

const kernelNote = (r: BenchRun): string | undefined => {
  const over = (r.kernels ?? []).filter((k) => k.ratio > 1);
  return over.length
    ? `${over.length} of ${r.kernels!.length} ops ran above 100% of their roof (${over
        .map((k) => `${k.op} ${k.name} T=${k.tokens}: ${fmt(k.ratio * 100, 0)}%`)
        .join('; ')}). ${CACHE_NOTE}`
    : undefined;
};

/** A run's description and tables, its headings one level under `level`. */
function runMarkdown(set: RunSet, level: 1 | 2, title: string): string[] {
  const r = set.run;
  const fp = r.fingerprint;
  const h = (n: number) => '#'.repeat(level + n);
  const out: string[] = [
    `${h(0)} ${title}`,
    '',
    `Run ${set.label}; machine: ${fp.gpu ? `${fp.gpu} (${fp.gpuMemoryGB} GB), ` : ''}${fp.cpu}, ${fp.cpuThreads} threads (${fp.simd}); node ${fp.node}; package ${fp.package}; from ${set.files.join(', ')}. 1 GB = 1e9 bytes.`,
  ];
  if (r.ceilings)
    out.push(
      '',
      `Ceilings measured in the same run: host read bandwidth ${fmt(r.ceilings.readGBps.value)} GB/s; dense bf16 matmul ${fmt(r.ceilings.denseGFLOPs.value)} GFLOP/s (${r.ceilings.denseKernel}).`,
    );
  for (const l of set.leftOut) out.push('', `Not shown: ${l}.`);
  for (const t of runTables(r)) {
    out.push('', `${h(1)} ${t.title}`, '');
    if (t.title === 'Memory') out.push(`${memoryLine(r.memory!)}.`, '');
    out.push(mdTable(t.head, t.rows));
    if (t.title === 'Kernels' && kernelNote(r)) out.push('', kernelNote(r)!);
    if (t.title === 'Decode')
      for (const s of r.decode!.skipped) out.push('', `Skipped batch ${s.batch} at context ${s.context}: ${s.reason}.`);
  }
  return out;
}

/** Which parts a run set holds, for the list of runs. */
const partsOf = (r: BenchRun) =>
  (['kernels', 'decode', 'prefill', 'memory', 'serve'] as const).filter((p) => r[p] !== undefined).join(', ');

/**
 * The report's Markdown: `set` in full, its comparison with `baseline`, and, when the files held
 * other runs (other commits, devices or machines), the list of every run and what is shown of it.
 */
export function markdownOf(
  set: RunSet,
  changes: Change[] | undefined,
  baseline: RunSet | undefined,
  all: RunSet[] = [set],
): string {
  const r = set.run;
  const out = runMarkdown(set, 1, `gptoss bench report: ${r.model} on ${r.device}`);
  if (all.length > 1) {
    const others = all.filter((x) => x !== set);
    // Said in the head, before the tables: the report holds more than the run above.
    out.splice(
      3,
      0,
      '',
      `The files hold ${all.length} runs (one per commit, device and machine; parts of one merge): this one, the newest, in full first, then ${others.length === 1 ? 'the other' : `the other ${others.length}, newest first`}, each with its own charts and tables under "Run ...".`,
      '',
      mdTable(
        ['run', 'device', 'model', 'parts', 'files', 'shown'],
        [...all]
          .reverse()
          .map((x) => [
            x.label,
            x.run.device,
            x.run.model,
            partsOf(x.run),
            x.files.join(', '),
            x === set ? 'in full, first' : x === baseline ? 'below; the baseline compared with' : 'below',
          ]),
      ),
    );
  }
  if (changes && baseline) {
    const worse = changes.filter((c) => c.verdict === 'worse').length,
      better = changes.filter((c) => c.verdict === 'better').length;
    out.push(
      '',
      `## Against ${baseline.label}`,
      '',
      `${changes.length} figures compared: ${better} better, ${worse} worse, ${changes.length - better - worse} within noise (two standard errors of the repeated samples, at least 2%). Lower is better for times (ms, s), higher for rates (GB/s, GFLOP/s, tokens/s).`,
      '',
      mdTable(
        ['figure', 'baseline', 'this run', 'change', 'noise', 'better', 'verdict'],
        changes.map((c) => [
          c.figure,
          `${fmt(c.base, 3)} ${c.unit}`,
          `${fmt(c.current, 3)} ${c.unit}`,
          signed(c.change),
          `±${fmt(c.noise * 100)}%`,
          c.better,
          c.verdict,
        ]),
      ),
    );
  }
  return out.join('\n');
}

/** Another run of the report: a section with its own description and tables. */
export const otherRunMarkdown = (set: RunSet, role: string): string =>
  runMarkdown(set, 2, `Run ${set.label}${role ? ` (${role})` : ''}: ${set.run.model} on ${set.run.device}`).join('\n');

const escape = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** Markdown tables and paragraphs of markdownOf() as HTML (the only Markdown it writes). */
function htmlOfMarkdown(md: string): string {
  const blocks = md.split('\n\n');
  return blocks
    .map((b) => {
      if (b.startsWith('# ')) return `<h1>${escape(b.slice(2))}</h1>`;
      if (b.startsWith('## ')) return `<h2>${escape(b.slice(3))}</h2>`;
      if (b.startsWith('### ')) return `<h3>${escape(b.slice(4))}</h3>`;
      if (b.startsWith('|')) {
        const rows = b
          .split('\n')
          .filter((_, i) => i !== 1)
          .map((l) => l.slice(2, -2).split(' | '));
        return `<table><thead><tr>${rows[0].map((c) => `<th>${escape(c)}</th>`).join('')}</tr></thead><tbody>${rows
          .slice(1)
          .map((r) => `<tr>${r.map((c) => `<td>${escape(c)}</td>`).join('')}</tr>`)
          .join('')}</tbody></table>`;
      }
      return `<p>${escape(b)}</p>`;
    })
    .join('\n');
}

/** A run's description, then its charts, then its tables (the first heading below `heading`). */
function section(markdown: string, charts: Chart[], heading: string): string {
  const split = markdown.indexOf(`\n${heading} `);
  const head = split < 0 ? markdown : markdown.slice(0, split),
    tables = split < 0 ? '' : markdown.slice(split + 1);
  const figures = charts
    .map((c) => `<figure id="${c.id}"><figcaption>${escape(c.title)}</figcaption>${c.svg}</figure>`)
    .join('\n');
  return `${htmlOfMarkdown(head)}
<section class="charts">
${figures}
</section>
${htmlOfMarkdown(tables)}`;
}

/** The page: the main run (`markdown`, `charts`), then each other run in its own section. */
export function htmlOf(
  markdown: string,
  charts: Chart[],
  others: { markdown: string; charts: Chart[] }[] = [],
): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gptoss bench report</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}
.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;border:1px solid #e4e4e4;padding:8px}figcaption{font-weight:600;margin-bottom:4px}
</style></head><body>
${section(markdown, charts, '##')}
${others.map((o) => `<section class="run">\n${section(o.markdown, o.charts, '###')}\n</section>`).join('\n')}
</body></html>
`;
}

export interface ReportOptions {
  files: string[];
  baseline?: string;
  outDir: string;
}

export async function loadRuns(files: string[]): Promise<{ file: string; run: BenchRun }[]> {
  if (files.length === 0) throw new InvalidArgumentError('bench report: no result files given');
  return Promise.all(
    files.map(async (file) => {
      let data: unknown;
      try {
        data = JSON.parse(await readFile(file, 'utf8'));
      } catch (e) {
        throw new InvalidArgumentError(
          `${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : `not JSON (${(e as Error).message})`}`,
        );
      }
      return { file, run: validateRun(data, file) };
    }),
  );
}

export async function renderReport(
  o: ReportOptions,
): Promise<{ html: string; markdown: string; charts: Chart[]; htmlPath: string; markdownPath: string }> {
  const runs = await loadRuns(o.baseline ? [...o.files.filter((f) => f !== o.baseline), o.baseline] : o.files);
  const sets = mergeRuns(runs);
  let baseline: RunSet | undefined;
  if (o.baseline) baseline = sets.find((s) => s.files.includes(o.baseline!));
  else if (sets.length >= 2) baseline = sets[0];
  const current = sets.filter((s) => s !== baseline).at(-1) ?? sets[sets.length - 1];
  const changes = baseline && baseline !== current ? compareRuns(baseline.run, current.run) : undefined;
  const charts = await chartsFor(current.run, changes);
  const shownBaseline = baseline !== current ? baseline : undefined;
  const head = markdownOf(current, changes, shownBaseline, sets);
  // Every other run too, newest first, each with its charts and tables: none is left out.
  const others: { markdown: string; charts: Chart[] }[] = [];
  for (const [i, set] of [...sets]
    .reverse()
    .filter((x) => x !== current)
    .entries())
    others.push({
      markdown: otherRunMarkdown(set, set === shownBaseline ? 'the baseline' : ''),
      charts: await chartsFor(set.run, undefined, `run${i + 2}-`),
    });
  const markdown = [head, ...others.map((o) => o.markdown)].join('\n\n');
  const html = htmlOf(head, charts, others);
  const allCharts = [...charts, ...others.flatMap((o) => o.charts)];
  await mkdir(o.outDir, { recursive: true });
  const htmlPath = join(o.outDir, 'report.html'),
    markdownPath = join(o.outDir, 'report.md');
  await writeFile(htmlPath, html);
  await writeFile(markdownPath, `${markdown}\n`);
  return { html, markdown, charts: allCharts, htmlPath, markdownPath };
}
