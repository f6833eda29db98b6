#!/usr/bin/env node
// node-gpt-oss against llama.cpp on the same weights, machine and threads (#21 items 2 and 3).
//
//   npm run build:ts && node benchmarks/llama-cpp.mjs [--layers 24] [--threads 2] [--rounds 2] [--out f.json]
//
// One synthetic gpt-oss-20b (createSyntheticModel's weights from --seed; --layers of its 24) is
// written once as an original-layout checkpoint for this engine and as GGUF for llama.cpp
// (lib/checkpoint/synthetic-files.ts, lib/checkpoint/gguf.ts: bf16 dense weights, MXFP4 experts,
// the same values bit for bit), cached under --cache and reused. Each round runs both engines, one
// after the other in alternating order, each in a child process of its own (one model in memory
// at a time, no thread pool of one engine spinning while the other runs): warm-up (a prompt of the
// same length and two steps, so every expert's pages are touched), then a --prompt token prefill
// and --tokens greedy decode steps, each step timed. The host memory read bandwidth is measured
// (lib/bench's probe, at --threads) before every engine run and after the last.
//
// llama.cpp is node-llama-cpp's prebuilt CPU binary (a devDependency): getLlama with gpu: false,
// build: 'never', skipDownload: true, so nothing is ever built or downloaded; its postinstall is
// skipped (package.json config), and package.json's overrides replace its CUDA and Vulkan
// packages (about 600 MB on Linux x64) and the macOS, Windows and riscv64 ones (absent from the
// registry these machines reach, so a lockfile naming them breaks npm ci) by an empty package:
// the CPU binaries for Linux x64, arm64 and armv7l are what installs. Its context: --threads
// threads, flash attention as node-llama-cpp picks it ("auto"), one ubatch per prompt up to 512
// tokens, f16 KV cache (its defaults); it repacks the MXFP4 experts into its own layout at load.
//
// Before each engine run it waits (--quiet-wait seconds at most) until other processes use under
// 0.08 cores, and a run during which they used over 0.12 is discarded and run again (--retries
// times); what they used is printed per run, and so are the major page faults (disk reads) of the
// timed part of each run.
// --prepare only writes the files (a long step best kept apart from the timed ones); --batch-only
// runs the batched measurements without the batch-1 ones.
// --batch adds llama.cpp's and this engine's batched work (#21 item 3): decode of 4 and 16
// sequences at once (--batch-prompt tokens of prompt each, then --tokens steps; the rate counts
// tokens while every sequence is decoding), and one prefill of --long-prompt tokens, both engines
// in chunks of 512. node-llama-cpp batches concurrent sequences of one context into one
// llama_decode ("maximumParallelism"); this engine's createEngine does continuous batching.
//
// Prints one table (per engine: prefill and decode tokens/s, decode's bytes per token over its
// time per token as a share of the read bandwidth (the median of the run's probes), and ours /
// llama.cpp) and, with --out, writes the JSON (--append adds this run's rounds to the file's, when
// the configuration is the same; --rounds 0 --append shows the file's rounds again).
// 1 GB = 1e9 bytes.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(join(root, 'dist', p));
/** Bump when the files' contents change (writer or generator): cached models are then rewritten. */
const FORMAT = 1;

const { values: o } = parseArgs({
  options: {
    layers: { type: 'string', default: '24' },
    threads: { type: 'string', default: '2' },
    prompt: { type: 'string', default: '128' },
    tokens: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '2' },
    seed: { type: 'string', default: '1' },
    cache: { type: 'string', default: join(homedir(), '.cache', 'node-gpt-oss', 'llama-cpp-bench') },
    batch: { type: 'boolean', default: false },
    'batch-only': { type: 'boolean', default: false },
    'batch-sizes': { type: 'string', default: '4,16' },
    'batch-prompt': { type: 'string', default: '16' },
    'long-prompt': { type: 'string', default: '1024' },
    out: { type: 'string' },
    append: { type: 'boolean', default: false },
    prepare: { type: 'boolean', default: false },
    'quiet-wait': { type: 'string', default: '600' },
    retries: { type: 'string', default: '3' },
    child: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (o.help) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 32)
      .join('\n'),
  );
  process.exit(0);
}
const int = (name, min = 1) => {
  const v = Number(o[name]);
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got ${o[name]}`);
  return v;
};
const opts = {
  layers: int('layers'),
  threads: int('threads'),
  prompt: int('prompt'),
  tokens: int('tokens', 2),
  rounds: int('rounds', 0),
  seed: int('seed', 0),
  batch: o.batch || o['batch-only'],
  batchOnly: o['batch-only'],
  batchSizes: o['batch-sizes'].split(',').map(Number),
  batchPrompt: int('batch-prompt'),
  longPrompt: int('long-prompt'),
};
if (opts.batchSizes.some((b) => !Number.isInteger(b) || b < 1)) throw new Error('--batch-sizes: integers >= 1');
process.env.GPTOSS_THREADS = String(opts.threads);

const modelDir = join(o.cache, `gpt-oss-20b-synthetic-${opts.layers}l-seed${opts.seed}`);
const ggufPath = join(modelDir, 'model.gguf');
const log = (s) => process.stderr.write(`${s}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Token ids of ordinary text (below the specials), deterministic from a seed. */
function promptTokens(seed, n) {
  let s = (seed * 2654435761) >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % 199998;
  });
}
const WARM = 101,
  MAIN = 202;

const argmax = (x) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
};

// --- the engines, each in its own process ------------------------------------------------------

/** This engine: loadModel (device cpu, default precision), weights read in before timing. */
async function runOurs() {
  const { loadModel, createEngine, deviceInfo } = await dist('index.js');
  const { Sampler } = await dist('engine/sampler.js');
  const model = await loadModel(modelDir, { device: 'cpu', prefetch: true });
  const V = model.config.vocabSize;
  const greedy = () => new Sampler({ temperature: 0 }, V);
  const out = { engine: 'node-gpt-oss', kvBytes: model.kvDType === 'f32' ? 4 : 2, cpu: deviceInfo().cpu };
  const P = opts.prompt,
    N = opts.tokens;
  if (!opts.batchOnly) {
    const session = model.createSession({ maxContext: P + N + 8, maxTokens: Math.min(P, 512) });
    await session.next(promptTokens(WARM, P), greedy());
    await session.next([1], greedy());
    await session.next([2], greedy());
    session.reset();
    const sampler = greedy();
    const faults0 = process.resourceUsage().majorPageFault;
    let t = performance.now();
    let r = await session.next(promptTokens(MAIN, P), sampler);
    const prefillS = (performance.now() - t) / 1e3;
    const tokens = [r.token];
    const stepMs = [];
    for (let i = 0; i < N; i++) {
      t = performance.now();
      r = await session.next([r.token], sampler);
      stepMs.push(performance.now() - t);
      tokens.push(r.token);
    }
    session.dispose();
    out.single = { prompt: P, prefillS, stepMs, tokens, majorFaults: process.resourceUsage().majorPageFault - faults0 };
  }
  if (opts.batch) {
    out.batched = [];
    for (const B of opts.batchSizes) {
      const engine = await createEngine({
        model,
        maxSequences: B,
        maxContext: opts.batchPrompt + N + 16,
        maxBatchTokens: Math.max(256, B * opts.batchPrompt),
      });
      const runAll = async (seedBase, steps) =>
        Promise.all(
          Array.from({ length: B }, async (_, b) => {
            const times = [];
            for await (const ev of engine.complete(promptTokens(seedBase + b, opts.batchPrompt), {
              maxTokens: steps,
              temperature: 0,
              stopTokens: [],
            }))
              if (ev.type === 'token') times.push(performance.now());
            return times;
          }),
        );
      await runAll(WARM * 1000, Math.min(N, 4));
      out.batched.push({ batch: B, prompt: opts.batchPrompt, ...decodeWindow(await runAll(MAIN * 1000, N)) });
      await engine.close();
    }
    const long = model.createSession({ maxContext: opts.longPrompt + 8, maxTokens: 512 });
    await long.forward(promptTokens(WARM, Math.min(opts.longPrompt, 32)), { logits: 'last' });
    long.reset();
    const t = performance.now();
    argmax(await long.forward(promptTokens(MAIN, opts.longPrompt), { logits: 'last' }));
    out.longPrefill = { tokens: opts.longPrompt, seconds: (performance.now() - t) / 1e3 };
    long.dispose();
  }
  model.dispose();
  return out;
}

/**
 * Decode rate of B sequences from their tokens' arrival times: tokens that arrived while every
 * sequence was decoding (after the last first token, up to the first sequence's last token).
 */
function decodeWindow(times) {
  const from = Math.max(...times.map((t) => t[0])),
    to = Math.min(...times.map((t) => t[t.length - 1]));
  const n = times.reduce((s, t) => s + t.filter((x) => x > from && x <= to).length, 0);
  return { windowMs: to - from, tokens: n, tokensPerSecond: (n / (to - from)) * 1e3 };
}

/** llama.cpp through node-llama-cpp's prebuilt CPU binary. */
async function runLlama() {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
    maxThreads: opts.threads,
  });
  const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  const out = { engine: 'llama.cpp', kvBytes: 2, binary: llama.buildType, gpu: llama.gpu };
  const P = opts.prompt,
    N = opts.tokens;
  const greedy = { temperature: 0, yieldEogToken: true };
  /** Prefill of `prompt` with the first draw, then `steps` decode steps; each timed. */
  const generate = async (seq, prompt, steps) => {
    const gen = seq.evaluate(prompt, greedy);
    let t = performance.now();
    let r = await gen.next();
    const prefillS = (performance.now() - t) / 1e3;
    const tokens = [r.value];
    const stepMs = [];
    for (let i = 0; i < steps; i++) {
      t = performance.now();
      r = await gen.next();
      stepMs.push(performance.now() - t);
      tokens.push(r.value);
    }
    await gen.return();
    return { prefillS, stepMs, tokens };
  };
  if (!opts.batchOnly) {
    const ctx = await model.createContext({
      contextSize: P + N + 16,
      batchSize: Math.min(P, 512),
      threads: opts.threads,
    });
    const seq = ctx.getSequence();
    await generate(seq, promptTokens(WARM, P), 2);
    await seq.clearHistory();
    const faults0 = process.resourceUsage().majorPageFault;
    out.single = { prompt: P, ...(await generate(seq, promptTokens(MAIN, P), N)) };
    out.single.majorFaults = process.resourceUsage().majorPageFault - faults0;
    await ctx.dispose();
  }
  if (opts.batch) {
    out.batched = [];
    for (const B of opts.batchSizes) {
      const ctx = await model.createContext({
        contextSize: B * (opts.batchPrompt + N + 16),
        sequences: B,
        batchSize: Math.max(256, B * opts.batchPrompt),
        threads: opts.threads,
      });
      const seqs = Array.from({ length: B }, () => ctx.getSequence());
      const runAll = (seedBase, steps) =>
        Promise.all(
          seqs.map(async (seq, b) => {
            const times = [];
            const gen = seq.evaluate(promptTokens(seedBase + b, opts.batchPrompt), greedy);
            for (let i = 0; i < steps; i++) {
              await gen.next();
              times.push(performance.now());
            }
            await gen.return();
            return times;
          }),
        );
      await runAll(WARM * 1000, Math.min(N, 4));
      for (const s of seqs) await s.clearHistory();
      out.batched.push({ batch: B, prompt: opts.batchPrompt, ...decodeWindow(await runAll(MAIN * 1000, N)) });
      await ctx.dispose();
    }
    const ctx = await model.createContext({ contextSize: opts.longPrompt + 16, batchSize: 512, threads: opts.threads });
    const seq = ctx.getSequence();
    await generate(seq, promptTokens(WARM, Math.min(opts.longPrompt, 32)), 0);
    await seq.clearHistory();
    const r = await generate(seq, promptTokens(MAIN, opts.longPrompt), 0);
    out.longPrefill = { tokens: opts.longPrompt, seconds: r.prefillS };
    await ctx.dispose();
  }
  await model.dispose();
  await llama.dispose();
  return out;
}

if (o.child) {
  const r = o.child === 'ours' ? await runOurs() : await runLlama();
  const u = process.resourceUsage();
  r.peakRssBytes = u.maxRSS * 1024;
  r.cpuSeconds = (u.userCPUTime + u.systemCPUTime) / 1e6;
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}

// --- the parent: files, rounds, bandwidth, the table ---------------------------------------------

if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('no dist/: run `npm run build:ts` first');
const { presetConfig } = await dist('engine/synthetic.js');
const { syntheticTensorSpecs } = await dist('engine/synthetic.js');
const { writeSyntheticCheckpoint } = await dist('checkpoint/synthetic-files.js');
const { writeGptOssGguf } = await dist('checkpoint/gguf.js');
const { decodeBytes } = await dist('engine/graph.js');
const { fingerprint, measureReadGBps } = await dist('bench/run.js');

const cfg = presetConfig('20b', opts.layers);

/** Writes the two files unless a complete pair of this format is cached. */
async function ensureModels() {
  const stampFile = join(modelDir, 'stamp.json');
  const want = { format: FORMAT, layers: opts.layers, seed: opts.seed };
  if (
    existsSync(stampFile) &&
    JSON.stringify(JSON.parse(readFileSync(stampFile, 'utf8')).want) === JSON.stringify(want)
  )
    return JSON.parse(readFileSync(stampFile, 'utf8'));
  rmSync(modelDir, { recursive: true, force: true });
  mkdirSync(modelDir, { recursive: true });
  const weights = syntheticTensorSpecs(cfg, opts.seed).specs.reduce((s, t) => s + t.bytes, 0);
  const need = 2.02 * weights; // the GGUF holds a little more: f32 norms, biases and router
  const fs = statfsSync(modelDir);
  const free = fs.bavail * fs.bsize;
  if (free < need)
    throw new Error(
      `the two model files need about ${(need / 1e9).toFixed(1)} GB in ${modelDir}; ${(free / 1e9).toFixed(1)} GB are free (use --cache or fewer --layers)`,
    );
  const progress = (what) => {
    let last = 0;
    return (done, total) => {
      if (done - last > 1e9 || done === total) {
        last = done;
        log(`  ${what}: ${(done / 1e9).toFixed(1)} of ${(total / 1e9).toFixed(1)} GB`);
      }
    };
  };
  let t = performance.now();
  log(`writing the synthetic gpt-oss-20b (${opts.layers} layers, seed ${opts.seed}) to ${modelDir}`);
  const st = await writeSyntheticCheckpoint(modelDir, cfg, opts.seed, { onProgress: progress('safetensors') });
  const stSeconds = (performance.now() - t) / 1e3;
  t = performance.now();
  const gg = await writeGptOssGguf(modelDir, ggufPath, {
    name: `gpt-oss-20b synthetic (${opts.layers} layers, seed ${opts.seed})`,
    onProgress: progress('gguf'),
  });
  const stamp = {
    want,
    safetensorsBytes: st.bytes,
    ggufBytes: gg.bytes,
    writeSeconds: { safetensors: stSeconds, gguf: (performance.now() - t) / 1e3 },
  };
  writeFileSync(stampFile, JSON.stringify(stamp, null, 2));
  return stamp;
}

/** Busy and total CPU time of the whole machine so far, in seconds (/proc/stat, USER_HZ = 100). */
function machineCpu() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] || 0);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: (total - idle) / 100, total: total / 100 };
  } catch {
    return undefined;
  }
}

function child(engine) {
  return new Promise((resolveRun, reject) => {
    const args = [
      fileURLToPath(import.meta.url),
      '--child',
      engine,
      ...process.argv.slice(2).filter((a) => a !== '--append'),
    ];
    const p = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, GPTOSS_THREADS: String(opts.threads), NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' },
    });
    let stdout = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`the ${engine} run exited with ${code}`));
      try {
        resolveRun(JSON.parse(stdout.trim().split('\n').pop()));
      } catch (e) {
        reject(new Error(`the ${engine} run printed no result: ${e.message}`));
      }
    });
  });
}

const { getModuleVersion } = await import('node-llama-cpp');
const nlc = {
  version: await getModuleVersion(),
  llamaCpp: JSON.parse(readFileSync(join(root, 'node_modules/node-llama-cpp/llama/llama.cpp.info.json'), 'utf8')),
};
const config = {
  layers: opts.layers,
  seed: opts.seed,
  threads: opts.threads,
  prompt: opts.prompt,
  tokens: opts.tokens,
  ...(opts.batch ? { batchSizes: opts.batchSizes, batchPrompt: opts.batchPrompt, longPrompt: opts.longPrompt } : {}),
  batchOnly: opts.batchOnly,
};
let previous;
if (o.out && o.append && existsSync(o.out)) {
  previous = JSON.parse(readFileSync(o.out, 'utf8'));
  if (JSON.stringify(previous.config) !== JSON.stringify(config))
    throw new Error(`--append: ${o.out} holds runs of another configuration`);
}
if (opts.rounds === 0 && !previous)
  throw new Error('--rounds 0 only shows the runs of an existing --out file (with --append)');
// --rounds 0 --append: the file's runs again, as they were measured (no new run, no new probe).
const stamp = opts.rounds === 0 ? previous.files : await ensureModels();
if (o.prepare) {
  log(`the model files are in ${modelDir}`);
  process.exit(0);
}
const fp = opts.rounds === 0 ? previous.fingerprint : fingerprint();
const runs = previous?.runs ?? [];
const bandwidth = previous?.bandwidth ?? [];
const firstRound = runs.length ? Math.max(...runs.map((r) => r.round)) + 1 : 1;
/** Cores other processes keep busy, over `ms` (this process idle meanwhile). */
async function othersBusy(ms) {
  const a = machineCpu(),
    own0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, ms));
  const b = machineCpu(),
    own = process.cpuUsage(own0);
  if (!a || !b) return 0;
  return Math.max(0, b.busy - a.busy - (own.user + own.system) / 1e6) / (ms / 1e3);
}

/** Waits (at most --quiet-wait seconds) until other processes use under 0.08 cores. */
async function waitQuiet() {
  const limit = Date.now() + Number(o['quiet-wait']) * 1e3;
  for (let said = false; ;) {
    const busy = await othersBusy(2000);
    if (busy < 0.08) return;
    if (Date.now() > limit)
      return log(`  the machine did not get quiet (others use ${busy.toFixed(2)} cores); running anyway`);
    if (!said) log(`  waiting for a quiet machine (other processes use ${busy.toFixed(2)} cores)...`);
    said = true;
  }
}

const discarded = previous?.discarded ?? [];
for (let r = firstRound; r < firstRound + opts.rounds; r++) {
  const order = r % 2 ? ['ours', 'llama'] : ['llama', 'ours'];
  for (const engine of order) {
    for (let attempt = 0; ; attempt++) {
      await waitQuiet();
      const bw = (await measureReadGBps(5)).value;
      log(`round ${r}: ${engine === 'ours' ? 'node-gpt-oss' : 'llama.cpp'} (read bandwidth ${bw.toFixed(1)} GB/s)...`);
      const t = performance.now();
      const cpu0 = machineCpu(),
        own0 = process.cpuUsage();
      const res = await child(engine);
      const wall = (performance.now() - t) / 1e3;
      const cpu1 = machineCpu(),
        own = process.cpuUsage(own0);
      // CPU time others spent on this machine during the run, in cores: timings are only as good
      // as the machine was quiet (the engines use --threads of its cores).
      const otherCores =
        cpu0 && cpu1
          ? Math.max(0, cpu1.busy - cpu0.busy - res.cpuSeconds - (own.user + own.system) / 1e6) / wall
          : null;
      const run = { round: r, readGBpsBefore: bw, wallSeconds: wall, otherCores, ...res };
      if (otherCores !== null && otherCores > 0.12 && attempt < Number(o.retries)) {
        log(`  other processes used ${otherCores.toFixed(2)} cores during this run: discarded, run again`);
        discarded.push(run);
        continue;
      }
      if (otherCores !== null && otherCores > 0.12)
        log(`  note: other processes used ${otherCores.toFixed(2)} cores during this run; its timings are suspect`);
      bandwidth.push(bw);
      runs.push(run);
      break;
    }
  }
}
if (opts.rounds > 0) bandwidth.push((await measureReadGBps(5)).value);

// --- the table ---

const readGBps = median(bandwidth);
const names = { ours: 'node-gpt-oss', llama: 'llama.cpp' };
const byEngine = (name) => runs.filter((r) => r.engine === name);
const summary = {};
for (const name of Object.values(names)) {
  const rs = byEngine(name);
  const kvBytes = rs[0]?.kvBytes ?? 2;
  const s = { rounds: rs.length };
  if (!opts.batchOnly) {
    const prefill = rs.map((r) => r.single.prompt / r.single.prefillS);
    const decode = rs.map((r) => 1e3 / median(r.single.stepMs));
    const bytes = decodeBytes(cfg, opts.prompt + opts.tokens / 2, kvBytes);
    // Against the median of all the run's probes: a single probe reads low now and then (neighbours
    // on the host, memory being freed after the other engine's exit), the median does not.
    const share = rs.map((r) => (bytes * (1e3 / median(r.single.stepMs))) / 1e9 / readGBps);
    Object.assign(s, {
      prefillTokensPerSecond: { median: median(prefill), all: prefill },
      decodeTokensPerSecond: { median: median(decode), all: decode },
      decodeBytesPerToken: bytes,
      decodeGBps: (bytes * median(decode)) / 1e9,
      decodeShareOfReadBandwidth: { median: median(share), all: share },
    });
  }
  if (opts.batch) {
    s.batched = opts.batchSizes.map((B) => {
      const xs = rs.map((r) => r.batched.find((b) => b.batch === B).tokensPerSecond);
      const bytes = decodeBytes(cfg, opts.batchPrompt + opts.tokens / 2, kvBytes, B);
      const share = rs.map(
        (r) => (bytes * (r.batched.find((b) => b.batch === B).tokensPerSecond / B)) / 1e9 / readGBps,
      );
      return {
        batch: B,
        tokensPerSecond: { median: median(xs), all: xs },
        bytesPerStep: bytes,
        shareOfReadBandwidth: median(share),
      };
    });
    const lp = rs.map((r) => r.longPrefill.tokens / r.longPrefill.seconds);
    s.longPrefillTokensPerSecond = { tokens: opts.longPrompt, median: median(lp), all: lp };
  }
  summary[name] = s;
}
const ours = summary['node-gpt-oss'],
  theirs = summary['llama.cpp'];
const ratios = {};
if (!opts.batchOnly) {
  ratios.prefill = ours.prefillTokensPerSecond.median / theirs.prefillTokensPerSecond.median;
  ratios.decode = ours.decodeTokensPerSecond.median / theirs.decodeTokensPerSecond.median;
}
if (opts.batch) {
  ratios.batched = opts.batchSizes.map((B, i) => ({
    batch: B,
    decode: ours.batched[i].tokensPerSecond.median / theirs.batched[i].tokensPerSecond.median,
  }));
  ratios.longPrefill = ours.longPrefillTokensPerSecond.median / theirs.longPrefillTokensPerSecond.median;
}
// How long the two engines' greedy tokens agree. llama.cpp rounds the experts' inputs to 8 bits
// (and the bf16 matmuls' to bf16), which flips near-tied top-4 expert choices; on these random
// weights that compounds over the layers. Measured on this model (12-token prompt): with top-4 of
// 32, llama.cpp's logits are 1.4-1.7% from ours at 2 layers and 40-92% at 24; with every expert
// used (no choice to flip), 5.0-7.7% at 24 layers. So the greedy tokens part early at 24 layers.
const agreement = opts.batchOnly
  ? undefined
  : runs
      .filter((r) => r.engine === 'llama.cpp')
      .map((l) => {
        const m = runs.find((r) => r.engine === 'node-gpt-oss' && r.round === l.round);
        if (!m) return null;
        let n = 0;
        while (n < l.single.tokens.length && l.single.tokens[n] === m.single.tokens[n]) n++;
        return n;
      });

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const range = (xs, d = 1) => (xs.length > 1 ? ` (${f(Math.min(...xs), d)}-${f(Math.max(...xs), d)})` : '');
const lines = [];
/** A Markdown table, columns padded. */
const table = (rows) => {
  const w = rows[0].map((_, c) => Math.max(3, ...rows.map((r) => r[c].length)));
  const line = (r) => `| ${r.map((x, c) => x.padEnd(w[c])).join(' | ')} |`;
  lines.push(line(rows[0]), `| ${w.map((n) => '-'.repeat(n)).join(' | ')} |`, ...rows.slice(1).map(line));
};
lines.push(
  `synthetic gpt-oss-20b, ${opts.layers} of 24 layers (seed ${opts.seed}); ${fp.cpu}, ${opts.threads} threads, ${fp.simd}`,
);
lines.push(
  `llama.cpp: node-llama-cpp ${nlc.version} prebuilt CPU binary (${nlc.llamaCpp.llamaCppGithubRepo} ${nlc.llamaCpp.tag}); node-gpt-oss ${fp.commit}, default precision`,
);
lines.push(
  `host read bandwidth, same run: median ${f(readGBps)} GB/s${range(bandwidth)} over ${bandwidth.length} probes; rounds per engine: ${ours.rounds}`,
);
if (!opts.batchOnly) {
  lines.push(
    `prompt ${opts.prompt} tokens, then ${opts.tokens} greedy tokens; decode bytes per token ${f(ours.decodeBytesPerToken / 1e9, 3)} GB (weights, 4 of ${cfg.numExperts} experts a layer, KV at context ${opts.prompt + opts.tokens / 2})`,
  );
  lines.push('');
  const rows = [
    ['engine', 'prefill tokens/s', 'decode tokens/s', 'decode GB/s', 'share of read bandwidth'],
    ...[theirs, ours].map((s, i) => [
      i ? 'node-gpt-oss' : 'llama.cpp',
      f(s.prefillTokensPerSecond.median) + range(s.prefillTokensPerSecond.all),
      f(s.decodeTokensPerSecond.median, 2) + range(s.decodeTokensPerSecond.all, 2),
      f(s.decodeGBps),
      f(s.decodeShareOfReadBandwidth.median, 2) + range(s.decodeShareOfReadBandwidth.all, 2),
    ]),
    ['ours / llama.cpp', `${f(ratios.prefill, 2)}x`, `${f(ratios.decode, 2)}x`, '', ''],
  ];
  table(rows);
  lines.push(
    `greedy tokens equal for the first ${agreement.filter((x) => x !== null).join(', ')} of ${opts.tokens + 1} (per round)`,
  );
}
if (opts.batch) {
  lines.push('');
  lines.push(
    `batched: ${opts.batchPrompt}-token prompts, ${opts.tokens} greedy tokens each, counted while every sequence decodes; prefill of ${opts.longPrompt} tokens in ubatches of 512`,
  );
  const rows = [
    ['engine', ...opts.batchSizes.map((B) => `decode B=${B} tokens/s (share)`), `prefill ${opts.longPrompt} tokens/s`],
    ...[theirs, ours].map((s, i) => [
      i ? 'node-gpt-oss' : 'llama.cpp',
      ...s.batched.map(
        (b) => `${f(b.tokensPerSecond.median, 2)}${range(b.tokensPerSecond.all, 2)} (${f(b.shareOfReadBandwidth, 2)})`,
      ),
      f(s.longPrefillTokensPerSecond.median) + range(s.longPrefillTokensPerSecond.all),
    ]),
    ['ours / llama.cpp', ...ratios.batched.map((b) => `${f(b.decode, 2)}x`), `${f(ratios.longPrefill, 2)}x`],
  ];
  table(rows);
  lines.push(
    'llama.cpp batched decode: node-llama-cpp evaluates the sequences of one context in one llama_decode per step (maximumParallelism batching)',
  );
}
lines.push(
  '',
  `other processes' CPU during each run, in cores (timings are as good as this is small): ${runs
    .map((r) => `round ${r.round} ${r.engine} ${f(r.otherCores ?? NaN, 2)}`)
    .join(', ')}`,
);
if (!opts.batchOnly)
  lines.push(
    `major page faults (disk reads) while timed: ${runs.map((r) => `round ${r.round} ${r.engine} ${r.single.majorFaults ?? '-'}`).join(', ')}`,
  );
console.log(lines.join('\n'));

const result = {
  bench: 'llama-cpp-comparison',
  date: opts.rounds === 0 ? previous.date : new Date().toISOString(),
  config,
  fingerprint: fp,
  nodeLlamaCpp: nlc,
  files: { dir: modelDir, ...stamp },
  bandwidth,
  readGBps,
  runs,
  summary,
  ratios,
  greedyAgreement: agreement,
  discarded,
  units: { GB: '1e9 bytes' },
};
if (o.out) writeFileSync(o.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify({ bench: result.bench, config, readGBps, ratios, commit: fp.commit }));
