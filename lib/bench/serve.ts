// `gptoss bench serve`: drives an OpenAI-compatible endpoint (ours in-process by default, or any
// URL) with streaming completions at several concurrency levels, and reports throughput (tokens/s
// in and out), time to first token and inter-token latency percentiles, errors and goodput.
// Token-id prompts with temperature 0, so every engine gets the same work. Bounded by count and time.
import { createEngine } from '../engine/engine.js';
import { fingerprint, ordinaryTokens, type ServeLevelResult, serveTable, textTable } from './run.js';
import { InvalidArgumentError } from '../errors.js';
import { seededRandom } from './rng.js';
import { createSyntheticModel, type Preset } from '../engine/synthetic.js';
import { createApp, listen } from '../server/server.js';
import { loadModel, type Model } from '../engine/model.js';

export interface ServeBenchOptions {
  url?: string;
  model?: string;
  synthetic?: Preset;
  layers?: number;
  apiKey?: string;
  modelId?: string;
  concurrency?: number[];
  /** Open-loop load instead: requests per second, Poisson arrivals (one level per rate). */
  rates?: number[];
  /** With rates: at most this many requests in flight (later arrivals wait); default unbounded. */
  maxConcurrency?: number;
  requestsPerLevel?: number;
  promptTokens?: [number, number];
  outputTokens?: [number, number];
  /** Goodput counts requests with TTFT and mean inter-token latency under these (ms). */
  ttftBoundMs?: number;
  itlBoundMs?: number;
  timeLimitS?: number;
  seed?: number;
  log?: (line: string) => void;
}

interface RequestResult {
  ok: boolean;
  promptTokens: number;
  outputTokens: number;
  ttftMs: number;
  itlMs: number[];
  totalMs: number;
}

const pct = (xs: number[], p: number): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function one(
  url: string,
  model: string,
  apiKey: string | undefined,
  prompt: number[],
  maxTokens: number,
): Promise<RequestResult> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(apiKey && { authorization: `Bearer ${apiKey}` }) },
    body: JSON.stringify({
      model,
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  const fail = {
    ok: false,
    promptTokens: prompt.length,
    outputTokens: 0,
    ttftMs: NaN,
    itlMs: [],
    totalMs: performance.now() - t0,
  };
  if (!res.ok || !res.body) return fail;
  const decoder = new TextDecoder();
  let buf = '',
    first = NaN,
    last = 0,
    out = 0;
  const itl: number[] = [];
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('');
      if (!data || data === '[DONE]') continue;
      const j = JSON.parse(data) as {
        choices?: { text?: string; finish_reason?: string | null }[];
        usage?: { completion_tokens: number };
        error?: unknown;
      };
      if (j.error) return fail;
      if (j.usage) out = j.usage.completion_tokens;
      if (j.choices?.[0]?.finish_reason == null && j.choices?.length) {
        const now = performance.now();
        if (Number.isNaN(first)) first = now - t0;
        else itl.push(now - last);
        last = now;
        if (!j.usage) out++;
      }
    }
  }
  return {
    ok: true,
    promptTokens: prompt.length,
    outputTokens: out,
    ttftMs: first,
    itlMs: itl,
    totalMs: performance.now() - t0,
  };
}

export async function runServeBench(o: ServeBenchOptions): Promise<{
  bench: 'serve';
  target: string;
  fingerprint: Record<string, string | number>;
  levels: ServeLevelResult[];
  units: object;
}> {
  const log = o.log ?? (() => {});
  const levels = o.concurrency ?? [1, 2, 4, 8];
  const perLevel = o.requestsPerLevel ?? 16;
  const [pMin, pMax] = o.promptTokens ?? [32, 256];
  const [oMin, oMax] = o.outputTokens ?? [16, 64];
  if (pMin < 1 || pMax < pMin || oMin < 1 || oMax < oMin)
    throw new InvalidArgumentError('bench serve: token ranges must be 1 <= min <= max');
  if (o.rates?.some((r) => !(r > 0 && Number.isFinite(r))))
    throw new InvalidArgumentError('bench serve: request rates must be positive numbers');
  let url = o.url;
  let modelId = o.modelId ?? 'bench-model';
  let stop = async () => {};
  let vocab = ordinaryTokens(Infinity); // any gpt-oss server
  if (!url) {
    let model: Model;
    if (o.model) {
      log(`loading ${o.model}...`);
      model = await loadModel(o.model);
      modelId = o.modelId ?? o.model;
    } else {
      log(`generating synthetic gpt-oss-${o.synthetic ?? '20b'} weights (${o.layers ?? 1} layers)...`);
      model = await createSyntheticModel({ preset: o.synthetic ?? '20b', layers: o.layers ?? 1 });
      modelId = o.modelId ?? `synthetic-${o.synthetic ?? '20b'}`;
    }
    vocab = ordinaryTokens(model.config.vocabSize);
    const maxC = o.rates ? (o.maxConcurrency ?? perLevel) : Math.max(...levels);
    const engine = await createEngine({ model, maxSequences: maxC, maxContext: pMax + oMax + 8, maxBatchTokens: 256 });
    const server = await listen(createApp(engine, { modelId }), { port: 0 });
    url = server.url;
    stop = async () => {
      await server.close();
      await engine.close({ abort: true });
      model.dispose();
    };
  }
  const rand = seededRandom(o.seed ?? 1);
  const deadline = Date.now() + (o.timeLimitS ?? 600) * 1000;
  const results: ServeLevelResult[] = [];
  try {
    const byRate = o.rates !== undefined;
    for (const level of byRate ? o.rates! : levels) {
      if (Date.now() > deadline) break;
      const c = byRate ? (o.maxConcurrency ?? perLevel) : level;
      log(byRate ? `${level} requests/s: ${perLevel} requests...` : `concurrency ${c}: ${perLevel} requests...`);
      const work = Array.from({ length: perLevel }, () => ({
        prompt: Array.from({ length: pMin + Math.floor(rand() * (pMax - pMin + 1)) }, () => Math.floor(rand() * vocab)),
        max: oMin + Math.floor(rand() * (oMax - oMin + 1)),
      }));
      const done: RequestResult[] = [];
      const send = (w: (typeof work)[number]) =>
        one(url!, modelId, o.apiKey, w.prompt, w.max).catch(() => ({
          ok: false,
          promptTokens: w.prompt.length,
          outputTokens: 0,
          ttftMs: NaN,
          itlMs: [],
          totalMs: 0,
        }));
      const t0 = performance.now();
      let last = t0; // the level lasts until its last answer, not its last timer
      if (byRate) {
        // Open loop: arrivals at exponential gaps whatever the server does, up to c in flight.
        const arrivals: number[] = [];
        let at = 0;
        for (let i = 0; i < work.length; i++) arrivals.push((at += -Math.log(1 - rand()) / level) * 1e3);
        let inFlight = 0;
        const waiting: (() => void)[] = [];
        // Arrivals past the time limit are not sent (nor waited for).
        const left = deadline - Date.now();
        await Promise.all(
          work.map(async (w, i) => {
            if (arrivals[i] > left) return;
            await new Promise((r) => setTimeout(r, Math.max(0, arrivals[i] - (performance.now() - t0))));
            while (inFlight >= c) await new Promise<void>((r) => waiting.push(r));
            inFlight++;
            done.push(await send(w));
            last = performance.now();
            inFlight--;
            waiting.shift()?.();
          }),
        );
      } else {
        let next = 0;
        await Promise.all(
          Array.from({ length: c }, async () => {
            while (next < work.length && Date.now() < deadline) {
              done.push(await send(work[next++]));
              last = performance.now();
            }
          }),
        );
      }
      const seconds = Math.max(1e-3, (last - t0) / 1e3);
      const ok = done.filter((d) => d.ok);
      const ttft = ok.map((d) => d.ttftMs).filter((x) => !Number.isNaN(x));
      const itl = ok.flatMap((d) => d.itlMs);
      const good = ok.filter(
        (d) =>
          d.ttftMs <= (o.ttftBoundMs ?? 5000) &&
          (d.itlMs.length === 0 || d.itlMs.reduce((a, b) => a + b, 0) / d.itlMs.length <= (o.itlBoundMs ?? 500)),
      );
      results.push({
        concurrency: c,
        ...(byRate && { requestRate: level }),
        requests: done.length,
        errors: done.length - ok.length,
        seconds,
        inputTokensPerSecond: ok.reduce((a, d) => a + d.promptTokens, 0) / seconds,
        outputTokensPerSecond: ok.reduce((a, d) => a + d.outputTokens, 0) / seconds,
        ttftMs: { p50: pct(ttft, 50), p90: pct(ttft, 90), p99: pct(ttft, 99) },
        itlMs: { p50: pct(itl, 50), p90: pct(itl, 90), p99: pct(itl, 99) },
        goodputRequestsPerSecond: good.length / seconds,
      });
    }
  } finally {
    await stop();
  }
  return {
    bench: 'serve',
    target: o.url ?? `in-process (${modelId})`,
    fingerprint: fingerprint(),
    levels: results,
    units: { time: 'ms', throughput: 'tokens/s' },
  };
}

export function formatServeBench(r: Awaited<ReturnType<typeof runServeBench>>): string {
  return textTable(serveTable(r.levels));
}
