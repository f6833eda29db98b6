import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { CACHE_NOTE, compareRuns, loadRuns, mergeRuns, numericOrder, renderReport } from '../lib/bench/report.js';
import type { BenchRun } from '../lib/bench/run.js';
import { InvalidArgumentError } from '../lib/errors.js';
import { fixtures, tmpDir } from './helpers/checkpoint.js';

// Recorded runs of `gptoss bench suite` and `gptoss bench serve --out` on the build VM (CPU
// backend, synthetic gpt-oss-20b): the report is rendered from them as a user would.
const suiteFile = join(fixtures, 'bench', 'cpu-suite.json');
const serveFile = join(fixtures, 'bench', 'cpu-serve.json');
const recorded = (): BenchRun => JSON.parse(readFileSync(suiteFile, 'utf8')) as BenchRun;

const svgOf = (html: string, id: string) => {
  const m = html.match(new RegExp(`<figure id="${id}">(.*?)</figure>`, 's'));
  return m?.[1];
};

describe('bench report', () => {
  it('renders every chart from recorded runs into one self-contained page and a Markdown summary', async () => {
    const out = tmpDir();
    const r = await renderReport({ files: [suiteFile, serveFile], outDir: out });
    expect(r.charts.map((c) => c.id)).toEqual([
      'roofline',
      'kernel-ratios',
      'decode-batch',
      'decode-context',
      'prefill',
      'serve-throughput',
      'serve-goodput',
      'serve-ttft',
      'serve-itl',
      'memory',
    ]);
    const html = readFileSync(r.htmlPath, 'utf8');
    for (const c of r.charts) {
      const svg = svgOf(html, c.id);
      expect(svg, c.id).toMatch(/^<figcaption>.*<\/figcaption><svg[^>]*>.*<\/svg>$/s);
    }
    // Self-contained: nothing fetched from elsewhere.
    expect(html).not.toMatch(/<script|<link|src="http|href="http/);
    // The roofline places every kernel: each op is in its legend, and one symbol per kernel.
    const run = recorded();
    const roofline = svgOf(html, 'roofline')!;
    for (const op of new Set(run.kernels!.map((k) => k.op))) expect(roofline, op).toContain(`>${op}</text>`);
    const symbols = roofline.match(/<g class="mark-symbol role-mark[^"]*"[^>]*>(.*?)<\/g>/s)?.[1] ?? '';
    expect(symbols.match(/<path/g)?.length).toBe(run.kernels!.length);
    // Decode charts: one line per context (by batch) and per batch (by context), measured and roofline.
    const contexts = new Set(run.decode!.points.map((p) => p.context));
    for (const c of contexts) expect(svgOf(html, 'decode-batch'), `context ${c}`).toContain(`>context ${c}</text>`);
    // The Markdown carries the tables.
    const md = readFileSync(r.markdownPath, 'utf8');
    expect(md).toBe(`${r.markdown}\n`);
    for (const k of run.kernels!) expect(md).toContain(`| ${k.op} | ${k.name} | ${k.tokens} |`);
    for (const p of run.decode!.points)
      expect(md).toContain(`| ${p.batch} | ${p.context} | ${p.tokensPerSecond.toFixed(2)} |`);
    expect(md).toContain('## Serving');
    expect(md).toContain('## Memory');
  }, 60_000);

  it('merges parts of one commit run separately, and compares two runs against the noise of their samples', async () => {
    const base = recorded();
    // The same machine at another commit: decode 40% slower at batch 1, everything else unchanged.
    const cur = structuredClone(base);
    cur.id = 'later';
    cur.date = new Date(Date.parse(base.date) + 3600e3).toISOString();
    cur.fingerprint.commit = 'fffffff';
    for (const p of cur.decode!.points)
      if (p.batch === 1) p.stepMs = { value: p.stepMs.value * 1.4, samples: p.stepMs.samples.map((s) => s * 1.4) };
    const changes = compareRuns(base, cur);
    for (const c of changes) {
      if (/^decode batch 1 /.test(c.figure)) {
        expect(c.verdict, c.figure).toBe('worse');
        expect(c.change).toBeCloseTo(0.4, 6);
      } else expect(c.verdict, c.figure).toBe('within noise');
    }
    expect(changes.filter((c) => c.figure.startsWith('kernel '))).toHaveLength(base.kernels!.length);

    const dir = tmpDir();
    const a = join(dir, 'a.json'),
      b = join(dir, 'b.json');
    writeFileSync(a, JSON.stringify(base));
    writeFileSync(b, JSON.stringify(cur));
    const r = await renderReport({ files: [b, a], outDir: join(dir, 'out') });
    expect(r.charts.map((c) => c.id)).toContain('comparison');
    expect(r.markdown).toMatch(/## Against \S+ /);
    expect(r.markdown).toMatch(
      new RegExp(
        `${changes.length} figures compared: 0 better, ${changes.filter((c) => c.verdict === 'worse').length} worse`,
      ),
    );

    // The serve run of the same commit and machine merges into the suite's run.
    const sets = mergeRuns(await loadRuns([suiteFile, serveFile]));
    expect(sets).toHaveLength(1);
    expect(sets[0].runs).toBe(1);
    expect(sets[0].run.kernels).toBeDefined();
    expect(sets[0].run.serve).toBeDefined();

    // A second run of the same commit and model pools its samples into every figure it shares,
    // and the figures derived from medians follow the pooled ones.
    const again = structuredClone(base);
    again.date = new Date(Date.parse(base.date) + 60e3).toISOString();
    for (const p of again.decode!.points)
      p.stepMs = { value: p.stepMs.value * 1.2, samples: p.stepMs.samples.map((x) => x * 1.2) };
    const [pooled] = mergeRuns([
      { file: 'a', run: base },
      { file: 'b', run: again },
    ]);
    expect(pooled.runs).toBe(2);
    expect(pooled.label).toMatch(/\(2 runs pooled\)$/);
    const p0 = pooled.run.decode!.points[0],
      b0 = base.decode!.points[0];
    expect(p0.stepMs.samples).toHaveLength(2 * b0.stepMs.samples.length);
    expect(p0.stepMs.value).toBeGreaterThan(b0.stepMs.value);
    expect(p0.tokensPerSecond).toBeCloseTo(p0.batch / (p0.stepMs.value / 1e3), 9);
    expect(pooled.run.kernels![0].ms.samples).toHaveLength(2 * base.kernels![0].ms.samples.length);
    expect(pooled.run.ceilings!.readGBps.samples).toHaveLength(2 * base.ceilings!.readGBps.samples.length);
  }, 60_000);

  it('refuses input that is not a bench result, naming the file and what is wrong', async () => {
    const dir = tmpDir();
    const bad = join(dir, 'bad.json');
    const run = recorded();
    delete (run.decode!.points[0] as Partial<(typeof run.decode & {})['points'][0]>).stepMs;
    writeFileSync(bad, JSON.stringify(run));
    await expect(loadRuns([bad])).rejects.toThrow(InvalidArgumentError);
    await expect(loadRuns([bad])).rejects.toThrow(
      /bad\.json is not a gptoss bench result .*\/decode\/points\/0 must have required property 'stepMs'/,
    );
    writeFileSync(bad, '{"schema": "something-else"');
    await expect(loadRuns([bad])).rejects.toThrow(/bad\.json: not JSON/);
    writeFileSync(bad, JSON.stringify({ ...recorded(), schema: 'other@1' }));
    await expect(loadRuns([bad])).rejects.toThrow(/\/schema must be equal to constant/);
    await expect(loadRuns([join(dir, 'missing.json')])).rejects.toThrow(/missing\.json: no such file/);
  });

  it('gptoss bench report writes report.html and report.md, and exits 1 with the reason on bad input', async () => {
    const run = promisify(execFile);
    const dir = tmpDir();
    const cli = join(fixtures, '..', '..', 'dist', 'cli', 'main.js');
    const ok = await run(process.execPath, [cli, 'bench', 'report', suiteFile, '--out', dir]);
    expect(ok.stdout).toContain('# gptoss bench report: ');
    expect(readFileSync(join(dir, 'report.html'), 'utf8')).toContain('<figure id="roofline">');
    const bad = join(dir, 'x.json');
    writeFileSync(bad, '[]');
    const e = await run(process.execPath, [cli, 'bench', 'report', bad, '--out', dir]).catch(
      (x: { code: number; stderr: string }) => x,
    );
    expect((e as { code: number }).code).toBe(1);
    expect((e as { stderr: string }).stderr).toMatch(/x\.json is not a gptoss bench result/);
  }, 60_000);

  it('renders every run of several commits, and says what of a commit it does not show', async () => {
    const results = join(fixtures, '..', '..', 'benchmarks', 'results');
    const files = readdirSync(results)
      .filter((f) => f.endsWith('.json'))
      .map((f) => join(results, f));
    const sets = mergeRuns(await loadRuns(files));
    expect(sets.length).toBeGreaterThanOrEqual(3);
    const r = await renderReport({ files, outDir: tmpDir() });
    // Every run has a place: the newest in full, every other one in a section of its own, newest first.
    expect(r.markdown).toContain(`The files hold ${sets.length} runs`);
    for (const f of files) expect(r.markdown).toContain(f);
    const sections = [...r.markdown.matchAll(/^## Run (\S+) /gm)].map((m) => m[1]);
    expect(sections).toEqual(
      sets
        .slice(0, -1)
        .reverse()
        .map((x) => x.run.fingerprint.commit),
    );
    // And its charts: each run's parts, under ids of their own.
    const ids = r.charts.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [i, set] of sets.slice(0, -1).reverse().entries()) {
      const prefix = `run${i + 2}-`;
      if (set.run.kernels) expect(ids).toContain(`${prefix}kernel-ratios`);
      if (set.run.serve) expect(ids).toContain(`${prefix}serve-goodput`);
      if (set.run.decode) expect(ids).toContain(`${prefix}decode-batch`);
    }
    const html = readFileSync(r.htmlPath, 'utf8');
    for (const id of ids) expect(html).toContain(`<figure id="${id}">`);

    // Two serve runs of one commit and machine: one is shown, the other is said to be left out.
    const serve = JSON.parse(readFileSync(serveFile, 'utf8')) as BenchRun;
    const later = structuredClone(serve);
    later.date = new Date(Date.parse(serve.date) + 60e3).toISOString();
    const dir = tmpDir();
    const [a, b] = [join(dir, 'a.json'), join(dir, 'b.json')];
    writeFileSync(a, JSON.stringify(serve));
    writeFileSync(b, JSON.stringify(later));
    const two = await renderReport({ files: [suiteFile, a, b], outDir: join(dir, 'out') });
    expect(two.markdown).toContain(
      `Not shown: serve of ${a}: replaced by that of ${b}, the newer run of this commit and machine (serve figures are not pooled).`,
    );
  }, 120_000);

  it('charts: numeric legend order, goodput in requests/s, distinct marks, the cache note, which way is better', async () => {
    const dir = tmpDir();
    const base = recorded();
    const cur = structuredClone(base);
    cur.date = new Date(Date.parse(base.date) + 3600e3).toISOString();
    cur.fingerprint.commit = 'fffffff';
    const [a, b] = [join(dir, 'a.json'), join(dir, 'b.json')];
    writeFileSync(a, JSON.stringify(base));
    writeFileSync(b, JSON.stringify(cur));
    const r = await renderReport({ files: [a, b, serveFile], outDir: join(dir, 'out') });
    const chart = (id: string) => r.charts.find((c) => c.id === id)!;
    const spec = (id: string) => chart(id).spec as unknown as Record<string, any>;
    const legend = (id: string, labels: string[]) =>
      labels
        .filter((l) => chart(id).svg.includes(`>${l}</text>`))
        .sort((x, y) => chart(id).svg.indexOf(`>${x}</text>`) - chart(id).svg.indexOf(`>${y}</text>`));

    // Legends in the order of their numbers: batch 1, 4, 16, 64 (as text: 1, 16, 4, 64).
    expect(numericOrder(['batch 16', 'batch 4', 'batch 64', 'batch 1'])).toEqual([
      'batch 1',
      'batch 4',
      'batch 16',
      'batch 64',
    ]);
    const batches = numericOrder(base.decode!.points.map((p) => `batch ${p.batch}`));
    expect(batches).toEqual(['batch 1', 'batch 4', 'batch 16', 'batch 64']);
    expect(spec('decode-context').encoding.color.scale.domain).toEqual(batches);
    expect(legend('decode-context', batches)).toEqual(batches);
    expect(spec('decode-batch').encoding.color.scale.domain).toEqual(['context 0', 'context 1024', 'context 8192']);

    // Goodput in its own unit on its own chart: the values as measured, not x100.
    const serve = JSON.parse(readFileSync(serveFile, 'utf8')) as BenchRun;
    const goodput = (spec('run2-serve-goodput').data.values as { goodput: number }[]).map((v) => v.goodput);
    expect(goodput).toEqual(serve.serve!.map((l) => l.goodputRequestsPerSecond));
    expect(goodput.every((g) => g < 1)).toBe(true); // 0.18-0.36 requests/s
    expect(chart('run2-serve-goodput').svg).toContain('>goodput (requests/s)</text>');
    expect(chart('run2-serve-goodput').svg).toContain('>0.36</text>');
    expect(chart('run2-serve-throughput').svg).not.toMatch(/goodput|x 100/);

    // Measured and roofline: one solid line through circles, one dashed through triangles, and a
    // legend entry for each with its own symbol.
    const enc = spec('decode-batch').encoding;
    expect(enc.shape.scale).toEqual({ domain: ['measured', 'roofline'], range: ['circle', 'triangle-up'] });
    expect(enc.strokeDash.scale.range[0]).not.toEqual(enc.strokeDash.scale.range[1]);
    const symbolOf = (label: string) =>
      new RegExp(` d="([^"]+)"[^>]*/></g><g class="mark-text role-legend-label"[^>]*><text[^>]*>${label}</text>`).exec(
        chart('decode-batch').svg,
      )?.[1];
    expect(symbolOf('measured')).toBeDefined();
    expect(symbolOf('roofline')).toBeDefined();
    expect(symbolOf('measured')).not.toBe(symbolOf('roofline'));

    // Ops above 100% of their roof are said, on the chart and in the text, to have run from cache.
    const over = base.kernels!.filter((k) => k.ratio > 1);
    expect(over.length).toBeGreaterThan(0);
    const ratios = chart('run2-kernel-ratios').svg;
    expect(ratios).toContain('memory-bound ops ran from cache');
    expect(ratios).toContain('Above 100% of a memory roof: the op ran from cache');
    expect(ratios.match(/>from cache<\/text>/g)).toHaveLength(over.filter((k) => k.bound === 'memory').length);
    expect(chart('run2-roofline').svg).toContain('points above the roof');
    expect(r.markdown).toContain(`${over.length} of ${base.kernels!.length} ops ran above 100% of their roof`);
    expect(r.markdown).toContain(CACHE_NOTE);

    // The change chart says in words which way is better, per figure and in its title.
    const cmp = chart('comparison').svg;
    expect(cmp).toContain('Lower is better for times (ms, s), higher for rates');
    expect(cmp).toMatch(/>decode batch 1 context 0 \(ms\/step; lower is better\)<\/text>/);
    expect(cmp).toMatch(/>ceiling: read bandwidth \(GB\/s; higher is better\)<\/text>/);
    expect(r.markdown).toMatch(/\| figure \| baseline \| this run \| change \| noise \| better \| verdict \|/);
    expect(r.markdown).toMatch(/\| ceiling: read bandwidth \| .* \| higher \| within noise \|/);
  }, 120_000);
});
