#!/usr/bin/env node
// The gptoss command: chat, generate, serve, the Hub, `logits` and `check` (any backend against the
// reference), and the `bench` suite.
import { readFileSync } from 'node:fs';
import { access, constants, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';

import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';

import { formatBench, runBench } from '../bench/model.js';
import { type CheckSkip, formatCheck, runCheck } from './check.js';
import { runList, runPull, runRm } from './models.js';
import { packageRoot } from '../backend/native.js';
import { formatMaskBench, runMaskBench } from '../bench/mask.js';
import { formatServeBench, runServeBench } from '../bench/serve.js';
import { type BenchRun, fingerprint, newRun } from '../bench/run.js';
import { formatRun, PARTS, type Part, runSuite } from '../bench/suite.js';
import { openCheckpoint } from '../checkpoint/checkpoint.js';
import { DEFAULT_MODEL, resolveModelDir } from '../checkpoint/hub.js';
import { estimateMemory } from '../engine/memory.js';
import { createEngine } from '../engine/engine.js';
import { createApp, listen } from '../server/server.js';
import { LOG_LEVELS, type LogLevel, requestLogger } from '../server/log.js';
import { servedModelId } from '../server/model-id.js';
import { strayRejectionHandler } from '../server/stray.js';
import { loadWithProgress, runChat, runGenerate } from './chat.js';
import { DEFAULT_CHAT_CONTEXT } from './chat.js';
import { GptOssError } from '../errors.js';
import { loadModel } from '../engine/model.js';
import { DEVICES, type Device } from '../backend/device.js';

const program = new Command();
program
  .name('gptoss')
  .description('Run gpt-oss-20b / gpt-oss-120b from Node.js')
  .version((JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version)
  .showHelpAfterError("(run 'gptoss <command> --help' for its options)");

const positiveInt = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new CommanderArgError(`${name} must be a positive integer`);
  return n;
};

const port = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new CommanderArgError(`--port must be an integer in [0, 65535] (0: any free port), got ${JSON.stringify(v)}`);
  return n;
};

/** Fails now, before any expensive work, if `file` could not be written later. */
async function checkWritable(file: string, flag: string): Promise<void> {
  const dir = dirname(resolve(file));
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new CommanderArgError(`${flag} ${file}: the folder ${dir} does not exist`);
  await access(dir, constants.W_OK).catch(() => {
    throw new CommanderArgError(`${flag} ${file}: the folder ${dir} is not writable`);
  });
  if ((await stat(file).catch(() => undefined))?.isDirectory())
    throw new CommanderArgError(`${flag} ${file} is a folder`);
}

/** Binds host:port and lets go again: an address in use or not ours is said before the model loads. */
async function checkBindable(host: string, p: number): Promise<void> {
  await new Promise<void>((ok, fail) => {
    const probe = createServer();
    probe.once('error', (e: NodeJS.ErrnoException) =>
      fail(
        new CommanderArgError(
          e.code === 'EADDRINUSE'
            ? `--port ${p}: the port is in use on ${host}`
            : e.code === 'EADDRNOTAVAIL'
              ? `--host ${host}: not an address of this machine`
              : `cannot listen on ${host}:${p}: ${e.message}`,
        ),
      ),
    );
    probe.listen(p, host, () => probe.close(() => ok()));
  });
}

/** `a,b, c` as ['a', 'b', 'c']. */
const commaList = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/** The JSON line is for programs: printed with --json or when stdout is not a terminal. */
const jsonOut = (json: boolean | undefined) => json === true || !process.stdout.isTTY;

/** Progress lines on stderr when it is a terminal and the output is not --json only. */
const stderrLog = (json: boolean | undefined) =>
  json || !process.stderr.isTTY ? undefined : (l: string) => void process.stderr.write(`${l}\n`);

function parseTokens(v: string): number[] {
  const parts = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const ids = parts.map(Number);
  const bad = parts.findIndex((s, i) => !/^\d+$/.test(s) || !Number.isSafeInteger(ids[i]));
  if (bad >= 0) throw new CommanderArgError(`token ${JSON.stringify(parts[bad])} is not a non-negative integer`);
  if (ids.length === 0) throw new CommanderArgError('no tokens given');
  return ids;
}

program
  .command('logits')
  .description('write the logits of every position as float32 little-endian [tokens, vocab]')
  .requiredOption('--model <model>', 'checkpoint directory (Hugging Face or original layout) or cached Hub id')
  .requiredOption('--tokens <ids>', 'comma-separated token ids', parseTokens)
  .requiredOption('--out <file>', 'output file')
  .addOption(new Option('--mode <mode>', 'precision mode').choices(['default', 'fp32']).default('default'))
  .addOption(new Option('--device <device>', 'backend').choices([...DEVICES]).default('cpu'))
  .option('--decode', 'feed the tokens one at a time through the KV cache instead of one prefill')
  .option('--max-tokens <n>', 'tokens per step of a prefill', positiveInt('--max-tokens'))
  .action(
    async (o: {
      model: string;
      tokens: number[];
      out: string;
      mode: 'default' | 'fp32';
      device: Device;
      decode?: boolean;
      maxTokens?: number;
    }) => {
      await checkWritable(o.out, '--out');
      const model = await loadModel(o.model, { mode: o.mode, device: o.device });
      try {
        const V = model.config.vocabSize;
        const session = model.createSession({
          maxContext: Math.max(o.tokens.length, 1),
          maxTokens: Math.min(o.maxTokens ?? 128, o.tokens.length),
        });
        let logits: Float32Array;
        if (o.decode) {
          logits = new Float32Array(o.tokens.length * V);
          for (let i = 0; i < o.tokens.length; i++)
            logits.set(await session.forward([o.tokens[i]], { logits: 'last' }), i * V);
        } else {
          logits = await session.forward(o.tokens);
        }
        await writeFile(o.out, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
        process.stderr.write(`wrote ${o.tokens.length}x${V} float32 logits to ${o.out}\n`);
      } finally {
        model.dispose();
      }
    },
  );

const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new CommanderArgError(`${name} must be a number`);
  return n;
};

/** The generation flags chat and generate share. */
function generationOptions(cmd: Command): Command {
  return cmd
    .option('--model <model>', 'checkpoint directory or Hub id in the cache', DEFAULT_MODEL)
    .addOption(new Option('--effort <level>', 'reasoning effort').choices(['low', 'medium', 'high']).default('medium'))
    .option('--system <text>', 'developer instructions')
    .option(
      '--max-tokens <n>',
      'most tokens per answer (default 2048, within the context)',
      positiveInt('--max-tokens'),
    )
    .option('--temperature <t>', 'sampling temperature (default 1.0; 0 = greedy)', num('--temperature'))
    .option('--top-p <p>', 'nucleus sampling (default 1.0)', num('--top-p'))
    .option('--top-k <k>', 'keep the k most likely tokens', positiveInt('--top-k'))
    .option('--min-p <p>', 'drop tokens below p times the most likely', num('--min-p'))
    .option('--seed <n>', 'seed for reproducible sampling', num('--seed'))
    .addOption(new Option('--device <device>', 'backend').choices([...DEVICES]).default('cpu'));
}

generationOptions(
  program
    .command('chat')
    .description(
      'chat with the model in the terminal, or answer the lines piped in, one by one (Ctrl-C stops an answer; exit, quit, /exit or Ctrl-D exits; /help)',
    ),
)
  .option(
    '--context <n>',
    `positions the conversation may use, questions and answers (default ${DEFAULT_CHAT_CONTEXT}; at most the model's context)`,
    positiveInt('--context'),
  )
  .option('--hide-reasoning', 'do not show the reasoning (shown dimmed by default)')
  .action(runChat);

generationOptions(
  program
    .command('generate')
    .description('answer one prompt and exit')
    .argument('[prompt]', 'the user message; - (or none, with stdin not a terminal) reads it from stdin'),
)
  .option(
    '--context <n>',
    "positions the prompt and answer may use (default: what they need, up to the model's context)",
    positiveInt('--context'),
  )
  .option('--show-reasoning', 'write the reasoning to stderr')
  .option('--json', 'print the whole result as one JSON object')
  .action(runGenerate);

program
  .command('check')
  .description(
    "parity with the official reference's logits on the golden fixtures: both layouts, both modes, prefill and decode",
  )
  .addOption(new Option('--device <device>', 'backend').choices([...DEVICES]).default('cpu'))
  .option('--fixtures <dir>', 'the fixtures folder (default: test/fixtures of this package)')
  .option('--json', 'print only the JSON line (printed after the table when stdout is not a terminal)')
  .action(async (o: { device: Device; fixtures?: string; json?: boolean }) => {
    const skipped: CheckSkip[] = [];
    const results = await runCheck({
      fixtures: o.fixtures ?? join(packageRoot, 'test', 'fixtures'),
      device: o.device,
      log: stderrLog(o.json),
      onSkip: (s) => skipped.push(s),
    });
    if (!o.json) process.stdout.write(`${formatCheck(results, o.device, skipped)}\n`);
    if (jsonOut(o.json))
      process.stdout.write(`${JSON.stringify({ device: o.device, fingerprint: fingerprint(), results, skipped })}\n`);
    if (results.some((r) => !r.pass)) process.exitCode = 1;
  });

program
  .command('inspect')
  .description("a model's config, layout, tensors and memory needs on a device, without loading it")
  .argument('[model]', 'checkpoint directory or Hub id (default openai/gpt-oss-20b)')
  .addOption(new Option('--device <device>', 'device to size it for').choices([...DEVICES]).default('cpu'))
  .option(
    '--context <n>',
    "context length for the KV cache figure (default 4096; at most the model's context)",
    positiveInt('--context'),
  )
  .option('--json', 'print JSON')
  .action(async (ref: string | undefined, o: { json?: boolean; device: Device; context?: number }) => {
    const ck = await openCheckpoint(await resolveModelDir(ref ?? DEFAULT_MODEL));
    const c = ck.config;
    if (o.context !== undefined && o.context > c.maxContext)
      throw new CommanderArgError(`--context ${o.context} is beyond the model's context of ${c.maxContext} positions`);
    let dense = 0,
      expert = 0;
    for (const [, [, e]] of ck.tensors) e.dtype === 'U8' ? (expert += e.byteLength) : (dense += e.byteLength);
    const mem = estimateMemory(c, {
      device: o.device,
      contextTokens: o.context ?? Math.min(4096, c.maxContext),
      weightsBytes: dense + expert,
    });
    const info = {
      dir: ck.dir,
      layout: ck.layout,
      files: ck.files.map((f) => ({ path: f.path, bytes: f.size, tensors: f.tensors.size })),
      tensors: ck.tensors.size,
      bytes: { total: dense + expert, denseBf16: dense, expertsMxfp4: expert },
      memory: mem,
      config: c,
    };
    if (o.json) return void process.stdout.write(`${JSON.stringify(info)}\n`);
    const gb = (b: number) => `${(b / 1e9).toFixed(3)} GB`;
    const lines = [
      ['checkpoint', `${ck.dir} (${ck.layout} layout, ${ck.files.length} file${ck.files.length > 1 ? 's' : ''})`],
      ['tensors', `${ck.tensors.size}, all names, dtypes and shapes valid`],
      ['weights', `${gb(dense + expert)}: ${gb(dense)} bf16 dense, ${gb(expert)} MXFP4 experts`],
      [
        'layers',
        `${c.numLayers} (${c.layerWindows.filter((w) => w > 0).length} sliding window ${c.slidingWindow}, ${c.layerWindows.filter((w) => w === 0).length} full)`,
      ],
      [
        'experts',
        `${c.numExperts}, ${c.expertsPerToken} per token, hidden ${c.hiddenSize}, intermediate ${c.intermediateSize}`,
      ],
      ['attention', `${c.numHeads} query heads, ${c.numKvHeads} KV heads, head dim ${c.headDim}`],
      ['vocabulary', `${c.vocabSize}`],
      ['context', `${c.maxContext} positions (YaRN x${c.ropeScalingFactor} over ${c.initialContextLength})`],
      [
        `KV cache (${mem.kvDType})`,
        `${(mem.kvBytesPerToken / 1024).toFixed(1)} KiB per token; ${gb(mem.kvBytes)} at ${mem.contextTokens} tokens`,
      ],
      ['activations', `${gb(mem.arenaBytes)}: a session's arena (activations and kernel scratch, 128 tokens per step)`],
      [
        `memory on ${o.device}`,
        mem.unavailable !== undefined
          ? `${gb(mem.totalBytes)} needed; no GPU to size it for: ${mem.unavailable}`
          : o.device === 'cpu'
            ? `${gb(mem.totalBytes)} needed, ${gb(mem.availableBytes)} available now of ${gb(mem.deviceBytes)} on this host: ${mem.fitsAvailable ? 'fits' : mem.fits ? 'does NOT fit in what is available now' : 'does NOT fit'}`
            : `${gb(mem.totalBytes)} needed, ${gb(mem.deviceBytes)} on this GPU: ${mem.fits ? 'fits' : 'does NOT fit'}`,
      ],
    ];
    const w = Math.max(...lines.map(([k]) => k.length));
    process.stdout.write(`${lines.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')}\n`);
  });

program
  .command('pull')
  .description('download a model from the Hugging Face Hub into the shared cache (resumable, checksummed)')
  .argument('[model]', 'Hub id, optionally @revision (default openai/gpt-oss-20b)')
  .addOption(new Option('--layout <layout>', 'which copy of the weights').choices(['hf', 'original']).default('hf'))
  .option('--verify', 'recompute the checksums of files already in the cache (else their sizes are compared)')
  .action(runPull);

program
  .command('list')
  .description('models in the Hugging Face cache, with sizes and layouts')
  .option('--json', 'print JSON')
  .action(runList);

program
  .command('rm')
  .description('delete a cached model: every revision, or one with @rev (its snapshot, refs, and blobs no other uses)')
  .argument('<model>', 'Hub id, optionally @revision (a branch, or 7 or more digits of the commit)')
  .option('--yes', 'delete without asking (needed when stdin is not a terminal)')
  .action(runRm);

program
  .command('serve')
  .description('an OpenAI-compatible HTTP server (chat completions, completions, models, health, metrics)')
  .option('--model <model>', 'checkpoint directory or Hub id in the cache', DEFAULT_MODEL)
  .option('--host <host>', 'address to bind (loopback unless you mean otherwise)', '127.0.0.1')
  .option('--port <port>', 'port', port, 8000)
  .option(
    '--api-key <key>',
    'require this bearer token on every route but /health (repeat for several keys, one per user)',
    (v: string, all: string[] | undefined) => [...(all ?? []), v],
  )
  .option('--served-model-name <name>', "the model id clients use (default: --model's Hub id, or its directory's name)")
  .option('--max-sequences <n>', 'requests batched together (default 16)', positiveInt('--max-sequences'))
  .option('--max-context <n>', 'positions per request (default 4096)', positiveInt('--max-context'))
  .option('--max-batch-tokens <n>', 'tokens per step (default 256)', positiveInt('--max-batch-tokens'))
  .option(
    '--allowed-hosts <names>',
    "Host names accepted besides loopback's and --host, comma-separated (* any)",
    commaList,
  )
  .option(
    '--allowed-origins <origins>',
    'web origins that may call the server, with CORS, comma-separated (default: only its own pages)',
    commaList,
  )
  .addOption(
    new Option(
      '--cache-isolation <who>',
      'who shares prefix-cache pages: none (all), key (each API key), user (each key and `user` field); default key with several keys',
    ).choices(['none', 'key', 'user']),
  )
  .option(
    '--request-timeout <seconds>',
    'abort a request after this long (default: no deadline)',
    positiveInt('--request-timeout'),
  )
  .option(
    '--max-connections <n>',
    'open connections at most; more are closed on arrival',
    positiveInt('--max-connections'),
  )
  .option(
    '--drain-timeout <seconds>',
    'on Ctrl-C or SIGTERM, how long requests in flight may take to finish before they are cut (default 30)',
    (v: string) => {
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n) || n < 0)
        throw new CommanderArgError('--drain-timeout must be a number of seconds, 0 or more');
      return n;
    },
    30,
  )
  .addOption(
    new Option('--log-level <level>', 'request log lines on stderr: info logs each request').choices([...LOG_LEVELS]),
  )
  .option('--quiet', 'no request log lines (--log-level silent)')
  .addOption(new Option('--device <device>', 'backend').choices([...DEVICES]).default('cpu'))
  .action(
    async (o: {
      model: string;
      host: string;
      port: number;
      drainTimeout: number;
      logLevel?: LogLevel;
      quiet?: boolean;
      apiKey?: string[];
      servedModelName?: string;
      maxSequences?: number;
      maxContext?: number;
      maxBatchTokens?: number;
      allowedHosts?: string[];
      allowedOrigins?: string[];
      cacheIsolation?: 'none' | 'key' | 'user';
      requestTimeout?: number;
      maxConnections?: number;
      device: Device;
    }) => {
      await checkBindable(o.host, o.port);
      const modelId = o.servedModelName ?? servedModelId(o.model);
      const t0 = Date.now();
      const model = await loadWithProgress(o.model, o.device);
      const engine = await createEngine({
        model,
        maxSequences: o.maxSequences,
        maxContext: o.maxContext,
        maxBatchTokens: o.maxBatchTokens,
      }).catch((e: unknown) => {
        model.dispose();
        throw e;
      });
      process.stderr.write(`loaded ${modelId} in ${((Date.now() - t0) / 1e3).toFixed(1)} s\n`);
      const app = createApp(engine, {
        modelId,
        log: requestLogger({ level: o.quiet ? 'silent' : (o.logLevel ?? 'info') }),
        apiKey: o.apiKey ?? process.env.GPTOSS_API_KEY,
        allowedHosts: o.allowedHosts,
        allowedOrigins: o.allowedOrigins,
        cacheIsolation: o.cacheIsolation,
        requestTimeoutMs: o.requestTimeout === undefined ? undefined : o.requestTimeout * 1000,
      });
      const server = await listen(app, { host: o.host, port: o.port, maxConnections: o.maxConnections });
      // A rejection nobody handled comes from one request's work: that request has failed; the
      // server must stay up for everyone else (lib/server/stray.ts).
      process.on('unhandledRejection', strayRejectionHandler());
      process.stderr.write(`serving ${modelId} at ${server.url}/v1 (Ctrl-C stops)\n`);
      // The first Ctrl-C (or SIGTERM) drains: no new requests, those in flight finish until the
      // deadline, then what is left is cut with its streams ended properly. A second one cuts now.
      let signals = 0;
      let cutNow = () => {};
      await new Promise<void>((resolve) => {
        const onSignal = () => (++signals === 1 ? resolve() : cutNow());
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
      process.stderr.write(
        `stopping: no new requests; those in flight may finish for ${o.drainTimeout} s (Ctrl-C again cuts them)\n`,
      );
      const cut = new Promise<'cut'>((resolve) => (cutNow = () => resolve('cut')));
      const drained = await Promise.race([server.drain({ deadlineMs: o.drainTimeout * 1000 }), cut]);
      if (drained === 'cut') {
        process.stderr.write('stopping now: requests in flight cut\n');
        await server.close();
        process.exitCode = 130;
      } else if (drained.inFlight)
        process.stderr.write(
          `stopped: ${drained.inFlight - drained.cut} request(s) finished` +
            `${drained.cut ? `, ${drained.cut} cut at the ${o.drainTimeout} s deadline` : ''}\n`,
        );
      await engine.close({ abort: true });
      model.dispose();
    },
  );

const bench = program
  .command('bench')
  .description('benchmarks: decode/prefill speed (default), the suite and its parts, serve, mask, report');

/** `16-64` (or one number for a fixed length) as [min, max]. */
const range =
  (name: string) =>
  (v: string): [number, number] => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(v.trim());
    const lo = m ? Number(m[1]) : NaN,
      hi = m ? Number(m[2] ?? m[1]) : NaN;
    if (!m || lo < 1 || hi < lo)
      throw new CommanderArgError(`${name} must be MIN-MAX with 1 <= MIN <= MAX, not ${JSON.stringify(v)}`);
    return [lo, hi];
  };

/** A comma-separated list of integers of at least `min`. */
const intList = (name: string, min: number) => (v: string) =>
  v.split(',').map((x) => {
    const n = Number(x.trim());
    if (x.trim() === '' || !Number.isSafeInteger(n) || n < min)
      throw new CommanderArgError(`${name}: ${JSON.stringify(x)} is not an integer of at least ${min}`);
    return n;
  });

/** Writes a run where `gptoss bench report` reads it. */
async function writeRun(file: string, r: BenchRun, quiet: boolean | undefined) {
  await writeFile(file, `${JSON.stringify(r, null, 1)}\n`);
  if (!quiet) process.stderr.write(`wrote ${file}\n`);
}

/** A progress bar on a terminal; nothing when stderr is a pipe or --json is given. */
function progressBar(quiet: boolean | undefined) {
  if (quiet || !process.stderr.isTTY) return { progress: undefined, stop: () => {} };
  const bar = new SingleBar({
    format: '{bar} {value}/{total} {label}',
    hideCursor: true,
    stream: process.stderr,
    clearOnComplete: true,
  });
  let started = false;
  return {
    progress: (done: number, total: number, label: string) => {
      if (!started) bar.start(total, done, { label });
      started = true;
      bar.setTotal(total);
      bar.update(done, { label });
      if (done >= total) {
        bar.stop();
        started = false;
      }
    },
    stop: () => {
      if (started) bar.stop();
      started = false;
    },
  };
}

for (const part of ['suite', ...PARTS] as const) {
  const what = {
    suite: 'all of kernels, decode, prefill and memory in one run (one JSON file for `bench report`)',
    kernels: 'every op at the real shapes: bytes and operations declared, GB/s and GFLOP/s against measured ceilings',
    decode: 'decode steps over batch sizes and context lengths, against the weight-and-KV streaming roofline',
    prefill: 'prefill of long prompts: tokens/s and the share of the dense matmul rate',
    memory: 'weights, KV cache per token and at long contexts, resident and peak memory',
  }[part];
  bench
    .command(part)
    .description(what)
    .option('--model <dir>', 'checkpoint directory')
    .addOption(
      new Option('--synthetic <preset>', 'random weights of the real shapes (default 20b)').choices(['20b', '120b']),
    )
    .option('--layers <n>', 'layers of a synthetic model (default 2)', positiveInt('--layers'))
    .addOption(new Option('--device <device>', 'backend').choices([...DEVICES]).default('cpu'))
    .option('--tokens <list>', 'kernels: tokens per call (1 = the decode shapes)', intList('--tokens', 0))
    .option('--kernel-context <n>', 'kernels: the decode position of attention', positiveInt('--kernel-context'))
    .option(
      '--batch <list>',
      'decode: batch sizes (default 1,4,16,64 on the CPU; 1-256 on CUDA)',
      intList('--batch', 0),
    )
    .option(
      '--context <list>',
      'decode: context lengths (default 0,1024,8192 on the CPU; up to 32768 on CUDA)',
      intList('--context', 0),
    )
    .option('--steps <n>', 'decode: timed steps per point', positiveInt('--steps'))
    .option(
      '--prompt <list>',
      'prefill: prompt lengths (default 1024 on the CPU; 1024,8192,32768 on CUDA)',
      intList('--prompt', 0),
    )
    .option('--repeats <n>', 'prefill: runs per prompt length', positiveInt('--repeats'))
    .option('--out <file>', 'write the run as JSON here')
    .option('--json', 'print only the JSON line (printed after the table when stdout is not a terminal)')
    .action(
      async (o: {
        model?: string;
        synthetic?: '20b' | '120b';
        layers?: number;
        device: Device;
        tokens?: number[];
        kernelContext?: number;
        batch?: number[];
        context?: number[];
        steps?: number;
        prompt?: number[];
        repeats?: number;
        out?: string;
        json?: boolean;
      }) => {
        if (o.model && o.synthetic) throw new CommanderArgError('pass --model or --synthetic, not both');
        // Checked here rather than by the parser so the message names what the number is.
        if (o.batch?.some((b) => b < 1)) throw new CommanderArgError('--batch sizes must be at least 1');
        if (o.prompt?.some((b) => b < 1)) throw new CommanderArgError('--prompt lengths must be at least 1');
        if (o.tokens?.some((b) => b < 1)) throw new CommanderArgError('--tokens must be at least 1');
        const bar = progressBar(o.json);
        try {
          const r = await runSuite({
            model: o.model,
            synthetic: o.model ? undefined : (o.synthetic ?? '20b'),
            layers: o.model ? undefined : (o.layers ?? 2),
            device: o.device,
            parts: part === 'suite' ? PARTS : [part as Part],
            kernelTokens: o.tokens,
            kernelContext: o.kernelContext,
            batches: o.batch,
            contexts: o.context,
            steps: o.steps,
            prompts: o.prompt,
            repeats: o.repeats,
            command: `gptoss ${process.argv.slice(2).join(' ')}`,
            log: stderrLog(o.json),
            progress: bar.progress,
          });
          bar.stop();
          if (!o.json) process.stdout.write(`${formatRun(r)}\n`);
          if (o.out) await writeRun(o.out, r, o.json);
          if (jsonOut(o.json)) process.stdout.write(`${JSON.stringify(r)}\n`);
        } finally {
          bar.stop();
        }
      },
    );
}

bench
  .command('report')
  .description(
    'render results (JSON files from the suite or `bench serve --out`) as an HTML page with charts and a Markdown summary',
  )
  .argument('<files...>', 'result files; with two or more runs, the newest is compared with the oldest (or --baseline)')
  .option('--baseline <file>', 'the run to compare against')
  .option('--out <dir>', 'where report.html and report.md go', 'bench-report')
  .action(async (files: string[], o: { baseline?: string; out: string }) => {
    // Vega is loaded here only: it adds a third of a second to every other command's start.
    const { renderReport } = await import('../bench/report.js');
    const r = await renderReport({ files, baseline: o.baseline, outDir: o.out });
    process.stdout.write(`${r.markdown}\n`);
    process.stderr.write(`wrote ${r.htmlPath} and ${r.markdownPath}\n`);
  });

bench
  .command('serve')
  .description('throughput and latency of an OpenAI-compatible endpoint at several concurrency levels')
  .option('--url <url>', 'an OpenAI-compatible server to drive (default: ours, in-process)')
  .option('--model <model>', 'checkpoint or Hub id for the in-process server')
  .addOption(new Option('--synthetic <preset>', 'random weights of the real shapes').choices(['20b', '120b']))
  .option('--layers <n>', 'layers of a synthetic model (default 1)', positiveInt('--layers'))
  .option('--api-key <key>', 'bearer token for --url')
  .option('--served-model <id>', 'the model id to send (with --url)')
  .option('--concurrency <list>', 'comma-separated levels', intList('--concurrency', 1), [1, 2, 4, 8])
  .option(
    '--rate <list>',
    'open-loop load instead of --concurrency: requests per second (Poisson arrivals), comma-separated levels',
    (v: string) =>
      v.split(',').map((x) => {
        const n = Number(x);
        if (!(n > 0 && Number.isFinite(n)))
          throw new CommanderArgError(`--rate: ${JSON.stringify(x)} is not a positive number`);
        return n;
      }),
  )
  .option(
    '--max-concurrency <n>',
    'with --rate: requests in flight at most (default: all of a level)',
    positiveInt('--max-concurrency'),
  )
  .option('--requests <n>', 'requests per level', positiveInt('--requests'), 16)
  .option('--prompt-tokens <min-max>', 'prompt lengths, drawn uniformly (default 32-256)', range('--prompt-tokens'))
  .option('--output-tokens <min-max>', 'output lengths, drawn uniformly (default 16-64)', range('--output-tokens'))
  .option('--ttft-bound <ms>', 'goodput: time to first token at most this (default 5000)', positiveInt('--ttft-bound'))
  .option(
    '--itl-bound <ms>',
    'goodput: mean inter-token latency at most this (default 500)',
    positiveInt('--itl-bound'),
  )
  .option('--time-limit <s>', 'stop starting requests after this many seconds', positiveInt('--time-limit'), 600)
  .option('--out <file>', 'also write the run as a bench result (for `bench report`)')
  .option('--json', 'print only the JSON line (printed after the table when stdout is not a terminal)')
  .action(
    async (o: {
      url?: string;
      model?: string;
      synthetic?: '20b' | '120b';
      layers?: number;
      apiKey?: string;
      servedModel?: string;
      concurrency: number[];
      rate?: number[];
      maxConcurrency?: number;
      requests: number;
      promptTokens?: [number, number];
      outputTokens?: [number, number];
      ttftBound?: number;
      itlBound?: number;
      timeLimit: number;
      out?: string;
      json?: boolean;
    }) => {
      const r = await runServeBench({
        url: o.url,
        model: o.model,
        synthetic: o.synthetic,
        layers: o.layers,
        apiKey: o.apiKey,
        modelId: o.servedModel,
        concurrency: o.concurrency,
        rates: o.rate,
        maxConcurrency: o.maxConcurrency,
        requestsPerLevel: o.requests,
        timeLimitS: o.timeLimit,
        promptTokens: o.promptTokens,
        outputTokens: o.outputTokens,
        ttftBoundMs: o.ttftBound,
        itlBoundMs: o.itlBound,
        log: stderrLog(o.json),
      });
      if (!o.json) process.stdout.write(`${formatServeBench(r)}\n`);
      if (jsonOut(o.json)) process.stdout.write(`${JSON.stringify(r)}\n`);
      if (o.out)
        await writeRun(
          o.out,
          { ...newRun(`gptoss ${process.argv.slice(2).join(' ')}`, r.target, 'cpu', r.fingerprint), serve: r.levels },
          o.json,
        );
    },
  );

bench
  .command('mask')
  .description("constrained decoding's cost per decode step (JSON Schema masks) at several batch sizes")
  .addOption(
    new Option('--synthetic <preset>', 'random weights of the real shapes').choices(['20b', '120b']).default('20b'),
  )
  .option('--layers <n>', 'layers of the synthetic model', positiveInt('--layers'), 2)
  .option('--batch <list>', 'comma-separated batch sizes', intList('--batch', 1), [1, 32])
  .option('--steps <n>', 'decode steps timed per batch size', positiveInt('--steps'), 16)
  .option('--json', 'print only the JSON line (printed after the table when stdout is not a terminal)')
  .action(async (o: { synthetic: '20b' | '120b'; layers: number; batch: number[]; steps: number; json?: boolean }) => {
    const r = await runMaskBench({
      synthetic: o.synthetic,
      layers: o.layers,
      batches: o.batch,
      steps: o.steps,
      log: stderrLog(o.json),
    });
    if (!o.json) process.stdout.write(`${formatMaskBench(r)}\n`);
    if (jsonOut(o.json)) process.stdout.write(`${JSON.stringify(r)}\n`);
  });

bench
  .command('run', { isDefault: true })
  .description('decode and prefill speed, and the share of memory bandwidth decode reaches')
  // A mistyped subcommand lands here (run is the default): name it rather than "too many arguments".
  .argument('[command]')
  .option('--model <dir>', 'checkpoint directory')
  .addOption(
    new Option('--synthetic <preset>', 'random weights of the real shapes, no download').choices(['20b', '120b']),
  )
  .option('--layers <n>', 'layers of a synthetic model (default 2)', positiveInt('--layers'))
  .addOption(new Option('--device <device>', 'backend').choices([...DEVICES]).default('cpu'))
  .option('--prefill-tokens <n>', 'prompt length', positiveInt('--prefill-tokens'), 128)
  .option('--decode-tokens <n>', 'tokens to decode', positiveInt('--decode-tokens'), 16)
  .option('--json', 'print only the JSON line (printed after the table when stdout is not a terminal)')
  .action(
    async (
      sub: string | undefined,
      o: {
        model?: string;
        synthetic?: '20b' | '120b';
        layers?: number;
        device: Device;
        prefillTokens: number;
        decodeTokens: number;
        json?: boolean;
      },
    ) => {
      if (sub !== undefined)
        throw new CommanderArgError(
          `unknown bench command ${JSON.stringify(sub)}; one of: ${bench.commands.map((c) => c.name()).join(', ')}`,
        );
      if (o.model && o.synthetic) throw new CommanderArgError('pass --model or --synthetic, not both');
      const r = await runBench({
        model: o.model,
        synthetic: o.model ? undefined : (o.synthetic ?? '20b'),
        layers: o.model ? undefined : (o.layers ?? 2),
        device: o.device,
        prefillTokens: o.prefillTokens,
        decodeTokens: o.decodeTokens,
        log: stderrLog(o.json),
      });
      if (!o.json) process.stdout.write(`${formatBench(r)}\n`);
      if (jsonOut(o.json)) process.stdout.write(`${JSON.stringify(r)}\n`);
    },
  );

// `gptoss ... | head` closes stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

program.parseAsync().catch((e: unknown) => {
  if (e instanceof GptOssError) {
    process.stderr.write(`gptoss: ${e.code}: ${e.message}\n`);
    process.exit(1);
  }
  if (e instanceof CommanderArgError) {
    process.stderr.write(`gptoss: ${e.message}\n`);
    process.exit(2);
  }
  // An error of the operating system's (a file, a socket): one line with its cause, no stack.
  const sys = e as NodeJS.ErrnoException;
  if (sys instanceof Error && typeof sys.code === 'string' && (sys.syscall !== undefined || sys.path !== undefined)) {
    process.stderr.write(`gptoss: ${sys.message}\n`);
    process.exit(1);
  }
  throw e;
});
