// loadModel and the objects it returns: a Model owns the weights (memory-mapped checkpoint files or
// synthetic tensors); a Session owns one sequence's KV cache and the recorded program that runs
// its steps. Both are native memory with an explicit dispose().
import { openCheckpoint, type Checkpoint, type Layout } from '../checkpoint/checkpoint.js';
import { resolveModelDir } from '../checkpoint/hub.js';
import { estimateMemory, InsufficientMemoryError } from './memory.js';
import type { ModelConfig } from '../checkpoint/config.js';
import {
  DEVICES,
  type Device,
  type KvDType,
  kvDTypeFor,
  PRECISION_MODES,
  type PrecisionMode,
} from '../backend/device.js';
import { AbortedError, BusyError, ContextOverflowError, DisposedError, InvalidArgumentError } from '../errors.js';
import { buildProgram, type ModelWeightIds, sessionPageTables, stepSequence } from './graph.js';
import {
  addon,
  assertDevice,
  type NativeProgram,
  type PageTable,
  type NativeWeights,
  type SampledToken,
  type WeightId,
} from '../backend/native.js';
import { checkInt, checkKeys, checkOneOf } from '../options.js';
import type { Sampler } from './sampler.js';
import {
  chat,
  type ChatEvent,
  type ChatMessage,
  type ChatOptions,
  type ChatResult,
  complete,
  type CompleteOptions,
  type CompletionEvent,
  type CompletionResult,
  type Generation,
  type GenerationBackend,
} from '../chat/generate.js';

export interface LoadModelOptions {
  device?: Device;
  mode?: PrecisionMode;
  /** Refuse config keys this engine does not know (default true). */
  strictConfig?: boolean;
  /** Read the weights into memory now rather than at the first step (default: true on the CPU, which
   * then also makes sure they are mapped in 2 MB pages, see readWeights; false elsewhere). */
  prefetch?: boolean;
  /** Called as the checkpoint is validated and (with prefetch) read. */
  onProgress?: (p: LoadProgress) => void;
  /** Refuse, before allocating, a model the device cannot hold with a 4096-token session (default true). */
  checkMemory?: boolean;
}

export interface LoadProgress {
  phase: 'validate' | 'read' | 'upload';
  bytesDone: number;
  bytesTotal: number;
}

export interface SessionOptions {
  /** Positions the KV cache holds (default min(4096, the model's context)). */
  maxContext?: number;
  /** Tokens per step; longer inputs run in chunks of this many (default 128). */
  maxTokens?: number;
}

export interface ForwardOptions {
  /** Which positions' logits to return: every one ([n, vocab]), the last ([vocab]), or none. */
  logits?: 'all' | 'last' | 'none';
  signal?: AbortSignal;
  /** Called after each step (of up to the session's maxTokens) with the tokens run so far and all of them. */
  onProgress?: (done: number, total: number) => void;
}

export class Model {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly mode: PrecisionMode;
  readonly layout: Layout | 'synthetic';
  /** The checkpoint directory, when loaded from one. */
  readonly dir: string | undefined;
  #weights: NativeWeights | undefined;
  readonly #ids: ModelWeightIds;
  readonly #sessions = new Set<Session>();

  /** @internal use loadModel() or createSyntheticModel() */
  constructor(parts: {
    config: ModelConfig;
    device: Device;
    mode: PrecisionMode;
    layout: Layout | 'synthetic';
    dir?: string;
    weights: NativeWeights;
    ids: ModelWeightIds;
  }) {
    this.config = parts.config;
    this.device = parts.device;
    this.mode = parts.mode;
    this.layout = parts.layout;
    this.dir = parts.dir;
    this.#weights = parts.weights;
    this.#ids = parts.ids;
  }

  get disposed(): boolean {
    return this.#weights === undefined;
  }

  /** Sessions of this model not yet disposed (chat() and complete() free theirs when they end). */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** The KV cache's dtype: follows the device and the precision mode (lib/backend/device.ts). */
  get kvDType(): KvDType {
    return kvDTypeFor(this.device, this.mode);
  }

  createSession(options: SessionOptions = {}): Session {
    checkKeys(options, ['maxContext', 'maxTokens'], 'createSession');
    const weights = this.#weights;
    if (!weights) throw new DisposedError('this model was disposed');
    const maxContext = checkInt(
      options.maxContext,
      'maxContext',
      Math.min(4096, this.config.maxContext),
      1,
      this.config.maxContext,
    );
    const maxTokens = checkInt(options.maxTokens, 'maxTokens', Math.min(128, maxContext), 1, maxContext);
    const spec = buildProgram(this.config, this.#ids, {
      device: this.device,
      maxTokens,
      maxContext,
      kvDType: this.kvDType,
      precision: this.mode,
    });
    const { Program } = addon();
    const program = new Program(weights, spec);
    const tables = sessionPageTables(this.config, { maxTokens, maxContext });
    const session = new Session(this, program, tables, maxContext, maxTokens, () => this.#sessions.delete(session));
    this.#sessions.add(session);
    return session;
  }

  /**
   * Chats in the Harmony format: an async iterator of reasoning / text / tool-call events, ending
   * with `done`; `.result()` awaits the whole answer. Uses its own session, freed at the end.
   */
  chat(messages: readonly ChatMessage[], options: ChatOptions = {}): Generation<ChatEvent, ChatResult> {
    return chat(modelBackend(this), messages, options);
  }

  /** Raw completion of a token list or a string (Harmony special tokens in a string are recognised). */
  complete(
    prompt: string | ArrayLike<number>,
    options: CompleteOptions = {},
  ): Generation<CompletionEvent, CompletionResult> {
    return complete(modelBackend(this), prompt, options);
  }

  /** @internal The engine's program: one batch of many sequences over shared KV page pools. */
  createPagedProgram(opts: {
    maxTokens: number;
    maxLogitRows?: number;
    fullRows: number;
    slidingRows: number;
  }): NativeProgram {
    const weights = this.#weights;
    if (!weights) throw new DisposedError('this model was disposed');
    const spec = buildProgram(this.config, this.#ids, {
      device: this.device,
      maxTokens: opts.maxTokens,
      maxLogitRows: opts.maxLogitRows,
      maxContext: this.config.maxContext,
      kvDType: this.kvDType,
      precision: this.mode,
      pool: { fullRows: opts.fullRows, slidingRows: opts.slidingRows },
    });
    const { Program } = addon();
    return new Program(weights, spec);
  }

  /** Frees the weights and every session of this model; idempotent. A step in flight finishes first. */
  dispose(): void {
    for (const s of [...this.#sessions]) s.dispose();
    this.#weights?.dispose();
    this.#weights = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export class Session {
  readonly model: Model;
  readonly maxContext: number;
  readonly maxTokens: number;
  #program: NativeProgram | undefined;
  readonly #tables: { full: PageTable; sliding: PageTable };
  #position = 0;
  #busy = false;
  readonly #onDispose: () => void;

  /** @internal use Model.createSession() */
  constructor(
    model: Model,
    program: NativeProgram,
    tables: { full: PageTable; sliding: PageTable },
    maxContext: number,
    maxTokens: number,
    onDispose: () => void,
  ) {
    this.model = model;
    this.#program = program;
    this.#tables = tables;
    this.maxContext = maxContext;
    this.maxTokens = maxTokens;
    this.#onDispose = onDispose;
  }

  /** Tokens in the KV cache: the position the next token will take. */
  get position(): number {
    return this.#position;
  }

  get disposed(): boolean {
    return this.#program === undefined;
  }

  /**
   * Runs `tokens` through the model after those already in the cache, in chunks of maxTokens,
   * and returns the logits asked for as float32 ([n, vocab] for 'all').
   */
  async forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    checkKeys(options, ['logits', 'signal', 'onProgress'], 'forward');
    const which = checkOneOf(options.logits, ['all', 'last', 'none'] as const, 'logits', 'all');
    return (await this.#run(tokens, which, options.signal, undefined, options.onProgress)).logits;
  }

  /**
   * Runs `tokens` like forward() and draws the next token from the last position's logits on the
   * worker thread, with `sampler`'s settings and RNG. The logits come back unchanged.
   */
  async next(
    tokens: ArrayLike<number>,
    sampler: Sampler,
    options: Pick<ForwardOptions, 'signal' | 'onProgress'> = {},
  ): Promise<SampledToken & { logits: Float32Array }> {
    checkKeys(options, ['signal', 'onProgress'], 'next');
    const r = await this.#run(tokens, 'last', options.signal, sampler, options.onProgress);
    return { ...r.sampled!, logits: r.logits };
  }

  async #run(
    tokens: ArrayLike<number>,
    which: 'all' | 'last' | 'none',
    signal: AbortSignal | undefined,
    sampler?: Sampler,
    onProgress?: (done: number, total: number) => void,
  ) {
    const program = this.#program;
    if (!program) throw new DisposedError('this session was disposed');
    if (this.#busy) throw new BusyError('a forward pass is already running on this session');
    const V = this.model.config.vocabSize;
    // The length is checked before anything is sized from it: { length: 7e8 } must not allocate.
    const length: unknown = typeof tokens === 'object' && tokens !== null ? tokens.length : undefined;
    if (!Number.isSafeInteger(length) || (length as number) < 0)
      throw new InvalidArgumentError(
        `forward: tokens must be an array (or typed array) of token ids, got ${typeof tokens === 'object' ? `length ${String(length)}` : typeof tokens}`,
      );
    const n = length as number;
    if (n === 0) throw new InvalidArgumentError('forward: tokens is empty');
    if (this.#position + n > this.maxContext)
      throw new ContextOverflowError(
        `forward: ${n} tokens after ${this.#position} would pass this session's maxContext of ${this.maxContext}`,
      );
    // Each id read once: what was checked is what runs.
    const ids = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= V)
        throw new InvalidArgumentError(`forward: token ${JSON.stringify(t)} at index ${i} is not an id in [0, ${V})`);
      ids[i] = t;
    }
    signal?.throwIfAborted();
    const out = new Float32Array(which === 'all' ? n * V : which === 'last' ? V : 0);
    let sampled: SampledToken | undefined;
    this.#busy = true;
    try {
      for (let start = 0; start < n; start += this.maxTokens) {
        if (signal?.aborted) throw new AbortedError('forward was aborted', { cause: signal.reason });
        const end = Math.min(n, start + this.maxTokens);
        const chunk = ids.subarray(start, end);
        const positions = new Int32Array(end - start);
        for (let i = 0; i < positions.length; i++) positions[i] = this.#position + i;
        let logitsStart = chunk.length;
        let dst: Float32Array | null = null;
        if (which === 'all') {
          logitsStart = 0;
          dst = out.subarray(start * V, end * V);
        } else if (which === 'last' && end === n) {
          logitsStart = chunk.length - 1;
          dst = out;
        }
        const sampling = sampler && end === n ? sampler.params() : null;
        sampled = await stepSequence(program, this.#tables, {
          tokens: chunk,
          positions,
          logitsStart,
          out: dst,
          sampling,
        });
        this.#position += chunk.length;
        onProgress?.(end, n);
      }
    } finally {
      this.#busy = false;
    }
    return { logits: out, sampled };
  }

  /** Forgets the cached tokens; the next forward starts at position 0. */
  reset(): void {
    if (!this.#program) throw new DisposedError('this session was disposed');
    if (this.#busy) throw new BusyError('cannot reset while a forward pass is running');
    this.#position = 0;
  }

  /** Frees the KV cache; idempotent. A step in flight finishes first (its memory is freed then). */
  dispose(): void {
    if (!this.#program) return;
    this.#program.dispose();
    this.#program = undefined;
    this.#onDispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Registers a checkpoint's tensors (memory-mapped, nothing read yet) and names their ids. */
function registerCheckpoint(weights: NativeWeights, ckpt: Checkpoint): ModelWeightIds {
  const fileIdx = ckpt.files.map((f) => weights.mapFile(f.path));
  const id = (name: string): WeightId => {
    const [fi, e] = ckpt.tensors.get(name)!;
    return weights.addMapped(fileIdx[fi], e.offset, e.byteLength, name);
  };
  const n = ckpt.names;
  return {
    embedding: id(n.embedding),
    norm: id(n.norm),
    unembedding: id(n.unembedding),
    layers: n.layers.map((l) => ({
      attnNorm: id(l.attnNorm),
      qkv: l.qkv.map((p) => ({ weight: id(p.weight), bias: id(p.bias), row: p.row, rows: p.rows })),
      sinks: id(l.sinks),
      outWeight: id(l.outWeight),
      outBias: id(l.outBias),
      mlpNorm: id(l.mlpNorm),
      routerWeight: id(l.routerWeight),
      routerBias: id(l.routerBias),
      mlp1Blocks: id(l.mlp1Blocks),
      mlp1Scales: id(l.mlp1Scales),
      mlp1Bias: id(l.mlp1Bias),
      mlp2Blocks: id(l.mlp2Blocks),
      mlp2Scales: id(l.mlp2Scales),
      mlp2Bias: id(l.mlp2Bias),
    })),
  };
}

/** Files under this size are not worth a second read to get 2 MB pages. */
const HUGE_PAGES_MIN_FILE = 64 * 2 ** 20;
/** A file's share in 2 MB pages under which it is read again (the rest are page walks at every 4 KB). */
const HUGE_PAGES_ENOUGH = 0.97;

/**
 * Reads the checkpoint's files into memory (in 256 MiB pieces, so progress moves and the event loop
 * turns between them). With `hugePages` (the CPU, whose kernels stream the weights every step), a
 * file the page cache held in 4 KB pages is then dropped and read again: mapFile advised 2 MB pages,
 * but a cache filled by writing the file (a download, a conversion) keeps its 4 KB pages. Through
 * those every page costs a page walk and stops the hardware prefetchers: on the build VM a plain
 * stream of a file read 4-5x slower, and decode ran 1.09-1.46x slower (benchmarks/RESULTS.md). A
 * 64 MiB probe first checks that a second read does bring 2 MB pages, so a file system without them
 * is read once only. A file partly in 2 MB pages (a cache another process's memory pushed part of
 * out of, then read back in pieces) is read again too: what is left in 4 KB pages cannot be told
 * apart from the rest, and dropping and reading the whole file brought it to over 99% on the VM.
 */
export async function readWeights(
  weights: NativeWeights,
  files: readonly { size: number }[],
  hugePages: boolean,
  onProgress: ((p: LoadProgress) => void) | undefined,
): Promise<void> {
  const piece = 256 * 2 ** 20;
  let done = 0,
    total = files.reduce((a, f) => a + f.size, 0);
  const read = async (fi: number, from: number, to: number, report: boolean) => {
    for (let off = from; off < to; off += piece) {
      const len = Math.min(piece, to - off);
      await weights.prefetch(fi, off, len);
      if (!report) continue;
      done += len;
      onProgress?.({ phase: 'read', bytesDone: done, bytesTotal: total });
    }
  };
  for (const [fi, f] of files.entries()) await read(fi, 0, f.size, true);
  if (!hugePages) return;
  for (const [fi, f] of files.entries()) {
    const before = f.size >= HUGE_PAGES_MIN_FILE ? weights.mappedState(fi) : null;
    if (!before || before.huge >= HUGE_PAGES_ENOUGH * before.resident) continue;
    // The probe: its first 64 MiB dropped, then read again (they may have been 2 MB pages already).
    weights.evict(fi, 0, HUGE_PAGES_MIN_FILE);
    const dropped = weights.mappedState(fi);
    await read(fi, 0, HUGE_PAGES_MIN_FILE, false);
    const after = weights.mappedState(fi);
    if (!dropped || !after || after.huge - dropped.huge < HUGE_PAGES_MIN_FILE / 2) continue;
    total += f.size - HUGE_PAGES_MIN_FILE;
    weights.evict(fi, HUGE_PAGES_MIN_FILE, f.size - HUGE_PAGES_MIN_FILE);
    await read(fi, HUGE_PAGES_MIN_FILE, f.size, true);
  }
}

export function checkLoadOptions(options: LoadModelOptions, where: string): { device: Device; mode: PrecisionMode } {
  checkKeys(options, ['device', 'mode', 'strictConfig', 'prefetch', 'onProgress', 'checkMemory'], where);
  return {
    device: checkOneOf(options.device, DEVICES, 'device', 'cpu'),
    mode: checkOneOf(options.mode, PRECISION_MODES, 'mode', 'default'),
  };
}

/**
 * Loads a gpt-oss checkpoint: a directory (Hugging Face layout, or the original layout, also when
 * it sits in `original/`) or a Hub id (`openai/gpt-oss-20b`, `org/name@revision`) already in the
 * Hugging Face cache (`gptoss pull` puts it there). Files are memory-mapped; every tensor is
 * validated against the config.
 */
export async function loadModel(ref: string, options: LoadModelOptions = {}): Promise<Model> {
  if (typeof ref !== 'string' || ref === '')
    throw new InvalidArgumentError('loadModel(ref): ref must be a directory or a Hub id like openai/gpt-oss-20b');
  const { device, mode } = checkLoadOptions(options, 'loadModel');
  assertDevice(device);
  // A Hub id resolves through the Hugging Face cache, with no network call.
  const dir = await resolveModelDir(ref);
  const ckpt = await openCheckpoint(dir, { strictConfig: options.strictConfig });
  const total = ckpt.files.reduce((a, f) => a + f.size, 0);
  if (options.checkMemory !== false) {
    const estimate = estimateMemory(ckpt.config, { device, mode, weightsBytes: total });
    if (!estimate.fits) throw new InsufficientMemoryError(estimate);
  }
  options.onProgress?.({ phase: 'validate', bytesDone: total, bytesTotal: total });
  const { Weights } = addon();
  const weights = new Weights();
  try {
    const ids = registerCheckpoint(weights, ckpt);
    if (options.prefetch ?? device === 'cpu')
      await readWeights(weights, ckpt.files, device === 'cpu', options.onProgress);
    if (device !== 'cpu') {
      // Off the JS thread: a program made later would otherwise copy 13 GB in its constructor.
      options.onProgress?.({ phase: 'upload', bytesDone: 0, bytesTotal: total });
      await weights.upload(device);
      options.onProgress?.({ phase: 'upload', bytesDone: total, bytesTotal: total });
    }
    return new Model({ config: ckpt.config, device, mode, layout: ckpt.layout, dir: ckpt.dir, weights, ids });
  } catch (e) {
    weights.dispose();
    throw e;
  }
}

/** A model as a backend: each call gets its own session, sized for its prompt and answer. */
function modelBackend(model: Model): GenerationBackend {
  return {
    config: model.config,
    defaultContext: model.config.maxContext,
    start(prompt, sampler, limits) {
      // Sized for what this call can use (its prompt and answer budget), not the whole limit.
      const positions = Math.min(limits.maxContext, prompt.length + limits.maxTokens);
      const session = model.createSession({ maxContext: positions, maxTokens: Math.min(128, positions) });
      let first = true;
      let last = -1;
      return {
        async next() {
          await sampler.prepare();
          const r = await session.next(first ? prompt : [last], sampler, {
            signal: limits.signal,
            onProgress: first ? limits.onPrefillProgress : undefined,
          });
          first = false;
          last = r.token;
          sampler.record(r.token);
          return r;
        },
        close: () => session.dispose(),
      };
    },
  };
}
