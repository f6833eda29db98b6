import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { chartsFor, compareRuns } from '../lib/bench/report.js';
import { newRun, validateRun } from '../lib/bench/run.js';
import { runServeBench } from '../lib/bench/serve.js';
import { createEngine, type Engine } from '../lib/engine/engine.js';
import { createSyntheticModel, presetConfig } from '../lib/engine/synthetic.js';
import { createApp, listen, type RunningServer } from '../lib/server/server.js';

// `gptoss bench serve --url` against a server of ours on loopback (as against any other engine):
// a small model of the real vocabulary, so the token-id prompts are valid for gpt-oss.
describe('bench serve', () => {
  let engine: Engine;
  let server: RunningServer;
  beforeAll(async () => {
    const config = {
      ...presetConfig('20b', 2),
      hiddenSize: 64,
      intermediateSize: 32,
      numExperts: 4,
      expertsPerToken: 2,
      numHeads: 2,
      numKvHeads: 1,
      slidingWindow: 8,
      layerWindows: [8, 0],
    };
    const model = await createSyntheticModel({ config, seed: 5 });
    engine = await createEngine({ model, maxSequences: 4, maxContext: 64 });
    server = await listen(createApp(engine, { modelId: 'small' }), { port: 0 });
  });
  afterAll(async () => {
    await server.close();
    await engine.close({ abort: true });
    engine.model.dispose();
  });

  const common = {
    modelId: 'small',
    requestsPerLevel: 6,
    promptTokens: [4, 12] as [number, number],
    outputTokens: [2, 5] as [number, number],
  };

  it('closed loop: each concurrency level sends its requests and reports throughput and latency percentiles', async () => {
    const r = await runServeBench({ url: server.url, concurrency: [1, 3], ...common });
    expect(r.target).toBe(server.url);
    expect(r.levels.map((l) => l.concurrency)).toEqual([1, 3]);
    for (const l of r.levels) {
      expect(l.requests).toBe(6);
      expect(l.errors).toBe(0);
      expect(l.requestRate).toBeUndefined();
      expect(l.outputTokensPerSecond).toBeGreaterThan(0);
      expect(l.inputTokensPerSecond).toBeGreaterThan(0);
      expect(l.ttftMs.p50).toBeLessThanOrEqual(l.ttftMs.p90!);
      expect(l.ttftMs.p90).toBeLessThanOrEqual(l.ttftMs.p99!);
      expect(l.goodputRequestsPerSecond).toBeLessThanOrEqual(l.requests / l.seconds + 1e-9);
    }
    expect(engine.stats().running).toBe(0);
  }, 120_000);

  it('open loop: requests arrive at the offered rate, at most max-concurrency in flight', async () => {
    // Near-simultaneous arrivals (1,000/s) against an engine with room for 4: the cap of 2 holds.
    let most = 0;
    const poll = setInterval(() => (most = Math.max(most, engine.stats().running)), 2);
    const burst = await runServeBench({ url: server.url, rates: [1000], maxConcurrency: 2, ...common });
    clearInterval(poll);
    expect(burst.levels[0]).toMatchObject({ requestRate: 1000, concurrency: 2, requests: 6, errors: 0 });
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
    // At 4 requests/s, six arrivals are spread over about 1.5 s (under 0.3 s with odds ~1e-3).
    const paced = await runServeBench({ url: server.url, rates: [4], ...common });
    expect(paced.levels[0]).toMatchObject({ requestRate: 4, requests: 6, errors: 0 });
    expect(paced.levels[0].seconds).toBeGreaterThan(0.3);
  }, 120_000);

  it('a server that is not there: every request is an error, the run still ends with figures', async () => {
    const r = await runServeBench({ url: 'http://127.0.0.1:9', concurrency: [2], ...common });
    expect(r.levels[0]).toMatchObject({ requests: 6, errors: 6, outputTokensPerSecond: 0 });
  }, 60_000);

  it('open loop: arrivals past the time limit are not sent, and the level ends with the limit', async () => {
    const t0 = performance.now();
    const r = await runServeBench({ url: server.url, rates: [0.01], timeLimitS: 1, ...common });
    expect(performance.now() - t0).toBeLessThan(5000);
    // At 0.01 requests/s the first arrival is ~100 s away: nothing is sent within the second.
    expect(r.levels[0].requests).toBeLessThan(6);
  }, 60_000);

  it('levels with nothing to measure report null percentiles, which the report accepts', async () => {
    // One-token answers have no inter-token latency; a dead server gives no TTFT either.
    const one = await runServeBench({ url: server.url, concurrency: [2], ...common, outputTokens: [1, 1] });
    expect(one.levels[0].errors).toBe(0);
    expect(one.levels[0].itlMs).toEqual({ p50: null, p90: null, p99: null });
    const dead = await runServeBench({ url: 'http://127.0.0.1:9', concurrency: [1], ...common });
    expect(dead.levels[0].ttftMs.p50).toBeNull();
    const run = newRun('test', 'small', 'cpu');
    run.serve = [...one.levels, ...dead.levels];
    const checked = validateRun(JSON.parse(JSON.stringify(run)), 'serve.json');
    const charts = await chartsFor(checked);
    expect(charts.map((c) => c.id)).toEqual(['serve-throughput', 'serve-goodput', 'serve-ttft', 'serve-itl']);
    expect(compareRuns(checked, checked).every((c) => Number.isFinite(c.noise))).toBe(true);
  }, 60_000);

  it('refuses a non-positive rate', async () => {
    await expect(runServeBench({ url: server.url, rates: [0], ...common })).rejects.toThrow(
      /request rates must be positive/,
    );
  });
});
