// An engine many callers in one process share: every step is formed from all live sequences
// (decodes first, then prefill chunks up to a token budget), so concurrent requests share one
// forward pass (continuous batching). KV caches are pages from shared pools: full-attention layers
// get pages for a sequence's prompt and answer, reserved when it is admitted; sliding-window
// layers hold only the pages their window can still see. Admission waits for pages (never an
// out-of-memory crash) behind a bounded queue (OverloadedError past it); cancellation frees a
// sequence's pages at the next step boundary. Whole pages of prompt prefixes are kept for reuse
// by later requests that start the same way (PrefixIndex).
import { createHash } from 'node:crypto';

import type { ModelConfig } from '../checkpoint/config.js';
import {
  AbortedError,
  BusyError,
  ContextOverflowError,
  DisposedError,
  GptOssError,
  InvalidArgumentError,
  OverloadedError,
  UnsupportedError,
} from '../errors.js';
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
  type DecodeLimits,
  type Decoder,
  type Generation,
  type GenerationBackend,
} from '../chat/generate.js';
import { estimateMemory, InsufficientMemoryError, kvPoolPlan } from './memory.js';
import type { Device, PrecisionMode } from '../backend/device.js';
import { loadModel, type Model } from './model.js';
import { type NativeProgram, type NativeSampling, type RowError, type SampledToken } from '../backend/native.js';
import { checkInt, checkKeys } from '../options.js';
import type { Sampler } from './sampler.js';

export interface EngineOptions {
  /** A loaded model, or a directory / Hub id to load (then the engine owns and frees it). */
  model: Model | string;
  device?: Device;
  mode?: PrecisionMode;
  /** Sequences in flight at once (default 16). */
  maxSequences?: number;
  /** Positions one sequence may use (default min(4096, the model's context)). */
  maxContext?: number;
  /** Bytes of the full-attention KV pool (default: every sequence at maxContext). */
  kvCacheBytes?: number;
  /**
   * Tokens per step: decodes plus prefill chunks (default 2048 on CUDA, where every step reads the
   * experts' weights again and a long prompt goes fastest in few steps; 256 on the CPU).
   */
  maxBatchTokens?: number;
  /** Positions per KV page (default 16). */
  pageSize?: number;
  /** Requests that may wait for admission before new ones get OverloadedError (default 256). */
  maxQueue?: number;
}

export interface EngineStats {
  running: number;
  queued: number;
  kvPagesUsed: number;
  kvPagesTotal: number;
  /** Full-attention KV pages taken from the prefix cache instead of being computed. */
  prefixPagesReused: number;
  steps: number;
  promptTokens: number;
  generatedTokens: number;
  lastStepMs: number;
  stepMsTotal: number;
}

/**
 * One layer type's KV pages: counted references, and idle pages that still hold a cached prompt
 * prefix, handed out again (least recently used first) only when the free list runs short.
 */
class PagePool {
  readonly total: number;
  readonly #free: number[];
  readonly #refs = new Map<number, number>();
  readonly #idle = new Set<number>();
  /** Called when an idle cached page is taken back for reuse: its prefix entry must go. */
  onEvict: (page: number) => void = () => {};

  constructor(total: number) {
    this.total = total;
    // Handed out lowest first, so a quiet engine touches the start of the pool only.
    this.#free = Array.from({ length: total }, (_, i) => total - 1 - i);
  }
  get available(): number {
    return this.#free.length + this.#idle.size;
  }
  get used(): number {
    return this.total - this.available;
  }
  take(n: number): number[] {
    while (this.#free.length < n && this.#idle.size) {
      const p = this.#idle.values().next().value as number;
      this.#idle.delete(p);
      this.onEvict(p);
      this.#free.push(p);
    }
    if (n > this.#free.length) throw new Error('KV page pool exhausted');
    const pages = this.#free.splice(this.#free.length - n, n).reverse();
    for (const p of pages) this.#refs.set(p, 1);
    return pages;
  }
  isIdle(p: number): boolean {
    return this.#idle.has(p);
  }
  ref(p: number): void {
    this.#refs.set(p, (this.#refs.get(p) ?? 0) + 1);
    this.#idle.delete(p);
  }
  /** Drops a reference; an unreferenced page stays cached when `cached` says it holds a prefix. */
  release(p: number, cached: boolean): void {
    const n = (this.#refs.get(p) ?? 1) - 1;
    if (n > 0) return void this.#refs.set(p, n);
    this.#refs.delete(p);
    if (cached) this.#idle.add(p);
    else this.#free.push(p);
  }
  /** An idle page whose prefix entry went away is simply free. */
  uncache(p: number): void {
    if (this.#idle.delete(p)) this.#free.push(p);
  }
}

/**
 * Prompt prefixes whose KV pages can be reused: entry k of a prompt is keyed by a hash of all its
 * tokens up to the end of page k, and names that page in both pools (full-attention layers and
 * sliding-window layers; the latter so a request reusing the prefix finds the window before its
 * first new token). A hit on page k means pages 0..k all match.
 */
class PrefixIndex {
  readonly #entries = new Map<string, { full: number; sliding: number }>();
  readonly #byFull = new Map<number, string>();
  readonly #bySliding = new Map<number, string>();
  hits = 0;

  constructor(
    readonly full: PagePool,
    readonly sliding: PagePool,
  ) {
    full.onEvict = (p) => this.#drop(this.#byFull.get(p));
    sliding.onEvict = (p) => this.#drop(this.#bySliding.get(p));
  }

  /** A salt goes into the first page's hash, so every key of a salted prompt is its salt's own. */
  static keys(tokens: number[], pageSize: number, salt?: string): string[] {
    const keys: string[] = [];
    let prev = salt ? createHash('sha1').update('cache-salt\0').update(salt).digest('hex') : '';
    for (let end = pageSize; end <= tokens.length; end += pageSize) {
      prev = createHash('sha1')
        .update(prev)
        .update(Buffer.from(Int32Array.from(tokens.slice(end - pageSize, end)).buffer))
        .digest('hex');
      keys.push(prev);
    }
    return keys;
  }

  /** How many leading keys have entries (pages to reuse), at most `max`. */
  match(keys: string[], max: number): { full: number; sliding: number }[] {
    const out = [];
    for (const k of keys.slice(0, max)) {
      const e = this.#entries.get(k);
      if (!e) break;
      out.push(e);
    }
    return out;
  }

  publish(key: string, full: number, sliding: number): void {
    if (this.#entries.has(key) || this.#byFull.has(full) || this.#bySliding.has(sliding)) return; // first writer wins
    this.#entries.set(key, { full, sliding });
    this.#byFull.set(full, key);
    this.#bySliding.set(sliding, key);
  }

  cachedFull(p: number): boolean {
    return this.#byFull.has(p);
  }
  cachedSliding(p: number): boolean {
    return this.#bySliding.has(p);
  }

  #drop(key: string | undefined): void {
    const e = key === undefined ? undefined : this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key!);
    this.#byFull.delete(e.full);
    this.#bySliding.delete(e.sliding);
    this.full.uncache(e.full);
    this.sliding.uncache(e.sliding);
  }
}

interface Seq {
  prompt: number[];
  /** Hash keys of the prompt's whole pages (PrefixCache). */
  keys: string[];
  published: number; // prompt pages offered to the prefix cache so far
  cached: number; // prompt tokens whose KV came from the prefix cache
  fed: number; // prompt tokens already in the cache
  pending: number | undefined; // the sampled token to feed next
  sampler: Sampler;
  limits: DecodeLimits;
  generated: number;
  /** Page of each page-sized span of positions: full-attention layers hold all of them. */
  fullPages: number[];
  /** Sliding-window layers hold only the pages a future query can see; -1 once released. */
  slidingPages: number[];
  state: 'queued' | 'running' | 'done';
  // Tokens the consumer has not taken yet, and a consumer waiting for one.
  ready: SampledToken[];
  waiting: { resolve: (t: SampledToken) => void; reject: (e: unknown) => void } | undefined;
  error: unknown;
  unlisten: () => void;
  /** A constrained sequence's mask for its next draw: being worked out (since `prepSince`), ready,
   * or not asked for yet. Only a ready sequence is sampled in a step. */
  prep: Promise<void> | 'ready' | undefined;
  prepSince: number;
}

interface Step {
  seqs: Seq[];
  /** The sequence of each logit row, in order. */
  logitSeqs: Seq[];
  args: Parameters<NativeProgram['step']>[0];
}

/**
 * The default step budget (maxBatchTokens). On CUDA every step streams the experts' weights again,
 * so a prompt in fewer, larger steps goes faster: 2048-token steps are predicted at 1.6x the 20b's
 * 8k-prompt prefill speed of 256-token ones on an H100 (npm run cuda:predict-prefill, a
 * PREDICTION); the arena grows with it (activations per token; the device logits are one row per
 * sequence, engineLogitRows; the attention's scratch is capped). The CPU keeps 256.
 */
export const CUDA_MAX_BATCH_TOKENS = 2048;
export const CPU_MAX_BATCH_TOKENS = 256;
/** A step asks for the logits of one row per sequence in it (its decode token or its prompt's last). */
const engineLogitRows = (o: { maxSequences: number; maxBatchTokens: number }): number =>
  Math.min(o.maxSequences, o.maxBatchTokens);

/** How long a step waits for a constrained sequence's mask before running without that sequence. */
const PREPARE_WAIT_MS = 20;

export class Engine implements GenerationBackend {
  readonly model: Model;
  readonly config: ModelConfig;
  readonly defaultContext: number;
  readonly maxSequences: number;
  readonly maxBatchTokens: number;
  readonly pageSize: number;
  readonly #ownsModel: boolean;
  readonly #maxQueue: number;
  readonly #program: NativeProgram;
  readonly #full: PagePool;
  readonly #sliding: PagePool;
  readonly #prefixes: PrefixIndex;
  /** Page-table entries per sequence: enough pages for maxContext. */
  readonly #tableRow: number;
  readonly #window: number;
  #queue: Seq[] = [];
  #running: Seq[] = [];
  #pumping = false;
  #closed = false;
  #turn = 0;
  #idle: (() => void)[] = [];
  /** Set while the scheduler waits with nothing to run: called when that may have changed. */
  #wake: (() => void) | undefined;
  readonly #stats = { steps: 0, promptTokens: 0, generatedTokens: 0, lastStepMs: 0, stepMsTotal: 0 };

  /** @internal use createEngine() */
  constructor(
    model: Model,
    ownsModel: boolean,
    o: Required<Omit<EngineOptions, 'model' | 'device' | 'mode' | 'kvCacheBytes'>> & { kvCacheBytes?: number },
  ) {
    this.model = model;
    this.config = model.config;
    this.#ownsModel = ownsModel;
    this.maxSequences = o.maxSequences;
    this.defaultContext = o.maxContext;
    this.maxBatchTokens = o.maxBatchTokens;
    this.pageSize = o.pageSize;
    this.#maxQueue = o.maxQueue;
    const c = model.config;
    const P = o.pageSize;
    const { tableRow, window, pageBytes, fullPages, slidingPages } = kvPoolPlan(c, { ...o, kvDType: model.kvDType });
    this.#tableRow = tableRow;
    if (fullPages < 1) throw new InvalidArgumentError(`kvCacheBytes ${o.kvCacheBytes} holds no ${pageBytes}-byte page`);
    this.#window = window;
    this.#full = new PagePool(fullPages);
    this.#sliding = new PagePool(slidingPages);
    this.#prefixes = new PrefixIndex(this.#full, this.#sliding);
    this.#program = model.createPagedProgram({
      maxTokens: o.maxBatchTokens,
      maxLogitRows: engineLogitRows(o),
      fullRows: fullPages * P,
      slidingRows: this.#sliding.total * P,
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  stats(): EngineStats {
    return {
      running: this.#running.length,
      queued: this.#queue.length,
      kvPagesUsed: this.#full.used,
      kvPagesTotal: this.#full.total,
      prefixPagesReused: this.#prefixes.hits,
      ...this.#stats,
    };
  }

  /** Chat in the Harmony format; the request shares the engine's steps with every other one. */
  chat(messages: readonly ChatMessage[], options: ChatOptions = {}): Generation<ChatEvent, ChatResult> {
    return chat(this, messages, options);
  }

  complete(
    prompt: string | ArrayLike<number>,
    options: CompleteOptions = {},
  ): Generation<CompletionEvent, CompletionResult> {
    return complete(this, prompt, options);
  }

  /** @internal GenerationBackend: a new sequence, queued for admission. */
  start(prompt: number[], sampler: Sampler, limits: DecodeLimits): Decoder {
    if (this.#closed) throw new DisposedError('the engine is closed');
    if (limits.maxContext > this.defaultContext)
      throw new ContextOverflowError(
        `a request may use ${this.defaultContext} positions on this engine; ${limits.maxContext} were asked for`,
      );
    const pages = Math.ceil((prompt.length + limits.maxTokens) / this.pageSize);
    if (pages > this.#full.total)
      throw new ContextOverflowError(`the request needs ${pages} KV pages; the engine has ${this.#full.total} in all`);
    if (limits.signal?.aborted) throw new AbortedError('generation was aborted', { cause: limits.signal.reason });
    const seq: Seq = {
      prompt,
      keys: PrefixIndex.keys(prompt, this.pageSize, limits.cacheSalt),
      published: 0,
      cached: 0,
      fed: 0,
      pending: undefined,
      sampler,
      limits,
      generated: 0,
      fullPages: [],
      slidingPages: [],
      state: 'queued',
      ready: [],
      waiting: undefined,
      error: undefined,
      unlisten: () => {},
      prep: undefined,
      prepSince: 0,
    };
    if (limits.signal) {
      const onAbort = () =>
        this.#stop(seq, new AbortedError('generation was aborted', { cause: limits.signal!.reason }));
      limits.signal.addEventListener('abort', onAbort, { once: true });
      seq.unlisten = () => limits.signal!.removeEventListener('abort', onAbort);
    }
    this.#queue.push(seq);
    this.#admit();
    if (seq.state === 'queued' && this.#queue.length > this.#maxQueue) {
      this.#queue.pop();
      seq.unlisten();
      throw new OverloadedError(
        `the engine is at capacity (${this.#running.length} running, ${this.#queue.length} queued); try again later`,
      );
    }
    this.#kick();
    return {
      next: () =>
        new Promise<SampledToken>((resolve, reject) => {
          const t = seq.ready.shift();
          if (t) return resolve(t);
          if (seq.error) return reject(seq.error);
          if (seq.state === 'done') return reject(new DisposedError('the sequence has ended'));
          seq.waiting = { resolve, reject };
        }),
      close: () => this.#stop(seq, undefined),
      get cachedTokens() {
        return seq.cached;
      },
    };
  }

  /** Ends a sequence (queued or running); its pages go back at the next step boundary. */
  #stop(seq: Seq, error: unknown): void {
    if (seq.state === 'done') return;
    if (seq.state === 'queued') this.#queue = this.#queue.filter((s) => s !== seq);
    seq.state = 'done';
    seq.unlisten();
    if (error !== undefined) {
      seq.error = error;
      seq.waiting?.reject(error);
      seq.waiting = undefined;
    }
    if (!this.#pumping) this.#reap();
    else this.#wake?.();
  }

  #reap(): void {
    for (const seq of this.#running)
      if (seq.state === 'done') {
        for (const p of seq.fullPages) this.#full.release(p, this.#prefixes.cachedFull(p));
        for (const p of seq.slidingPages) if (p >= 0) this.#sliding.release(p, this.#prefixes.cachedSliding(p));
        seq.fullPages = [];
        seq.slidingPages = [];
      }
    this.#running = this.#running.filter((s) => s.state !== 'done');
    if (this.#running.length === 0 && this.#queue.length === 0) for (const f of this.#idle.splice(0)) f();
  }

  #admit(): void {
    while (this.#queue.length && this.#running.length < this.maxSequences) {
      const seq = this.#queue[0];
      const need = Math.ceil((seq.prompt.length + seq.limits.maxTokens) / this.pageSize);
      // Reuse the cached pages of the longest matching prompt prefix. At least the last prompt
      // token runs again (its logits are needed); it rewrites bytes equal to those cached, as
      // every op computes a token the same way whatever else is in the step.
      const hits = this.#prefixes.match(seq.keys, need);
      // Idle cached hits count as available but are about to be referenced, not taken.
      const idleHits = hits.filter((h) => this.#full.isIdle(h.full)).length;
      if (need - hits.length > this.#full.available - idleHits) break; // first come, first served
      this.#queue.shift();
      for (const h of hits) this.#full.ref(h.full);
      seq.fullPages = [...hits.map((h) => h.full), ...this.#full.take(need - hits.length)];
      seq.fed = Math.min(seq.prompt.length - 1, hits.length * this.pageSize);
      seq.cached = seq.fed;
      seq.published = hits.length;
      this.#prefixes.hits += hits.length;
      // Sliding pages: only those the next queries can see.
      const firstVisible = Math.floor(Math.max(0, seq.fed - this.#window + 1) / this.pageSize);
      seq.slidingPages = hits.map((h, k) => {
        if (k < firstVisible) return -1;
        this.#sliding.ref(h.sliding);
        return h.sliding;
      });
      seq.state = 'running';
      this.#running.push(seq);
    }
  }

  /** Runs the scheduler loop if it is not running; a fault in it fails the requests, not the process. */
  #kick(): void {
    this.#wake?.();
    this.#pump().catch((e: unknown) => {
      const err =
        e instanceof GptOssError
          ? e
          : new BusyError(`the engine's scheduler failed: ${(e as Error)?.message ?? e}`, { cause: e });
      for (const seq of [...this.#queue, ...this.#running]) this.#stop(seq, err);
      this.#reap();
    });
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      for (;;) {
        this.#reap();
        this.#admit();
        this.#startPreparing();
        await this.#awaitPrepared();
        const step = this.#form();
        if (!step) {
          // Nothing to run until a constraint has its mask, a request arrives or one ends.
          const preparing = this.#running.flatMap((s) =>
            s.state === 'running' && s.prep instanceof Promise ? [s.prep] : [],
          );
          if (!preparing.length) break;
          await new Promise<void>((wake) => {
            this.#wake = wake;
            for (const p of preparing) void p.then(wake);
          });
          this.#wake = undefined;
          continue;
        }
        // A sequence failed or cancelled meanwhile still runs in the step (its pages are held until
        // the step ends) but is not sampled.
        step.args.sampling = step.logitSeqs.map((s) => (s.state === 'running' ? s.sampler.params() : null));
        const t0 = performance.now();
        let results: (SampledToken | RowError | null)[];
        try {
          results = await this.#program.step(step.args);
        } catch (e) {
          // A failed step fails the sequences in it, and only those; the engine carries on.
          for (const seq of step.seqs)
            this.#stop(
              seq,
              e instanceof GptOssError ? e : new BusyError(`a step failed: ${(e as Error).message}`, { cause: e }),
            );
          continue;
        }
        const ms = performance.now() - t0;
        this.#stats.steps++;
        this.#stats.lastStepMs = ms;
        this.#stats.stepMsTotal += ms;
        this.#deliver(step, results);
      }
    } finally {
      this.#pumping = false;
      this.#reap();
    }
  }

  /** The next step: every running sequence's pending token, then prompt chunks within the budget. */
  #form(): Step | undefined {
    let budget = this.maxBatchTokens;
    const tokens: number[] = [],
      positions: number[] = [],
      seqIdx: number[] = [];
    const seqs: Seq[] = [];
    const logitRows: number[] = [],
      logitSeqs: Seq[] = [];
    const add = (seq: Seq, toks: number[], start: number, wantLogits: boolean) => {
      const s = seqs.length;
      // Sliding pages for the positions this step writes.
      for (let k = Math.floor(start / this.pageSize); k <= Math.floor((start + toks.length - 1) / this.pageSize); k++) {
        while (seq.slidingPages.length <= k) seq.slidingPages.push(-1);
        if (seq.slidingPages[k] < 0) seq.slidingPages[k] = this.#sliding.take(1)[0];
      }
      seqs.push(seq);
      for (let i = 0; i < toks.length; i++) {
        tokens.push(toks[i]);
        positions.push(start + i);
        seqIdx.push(s);
      }
      if (wantLogits) {
        logitRows.push(tokens.length - 1);
        logitSeqs.push(seq);
      }
      budget -= toks.length;
    };
    // Decodes first, starting one further along each step, so that with more sequences than the
    // token budget every sequence gets its turn.
    const n = this.#running.length;
    const order = n ? [...this.#running.slice(this.#turn % n), ...this.#running.slice(0, this.#turn % n)] : [];
    this.#turn++;
    for (const seq of order)
      if (seq.state === 'running' && seq.pending !== undefined && budget > 0 && this.#ready(seq)) {
        add(seq, [seq.pending], seq.prompt.length + seq.generated - 1, true);
        seq.pending = undefined;
      }
    for (const seq of this.#running) {
      // The prompt's last token gives the first draw: it waits for a constraint's first mask.
      const room = seq.prompt.length - seq.fed - (this.#ready(seq) ? 0 : 1);
      if (seq.state === 'running' && room > 0 && budget > 0) {
        const take = Math.min(budget, room);
        add(seq, seq.prompt.slice(seq.fed, seq.fed + take), seq.fed, seq.fed + take === seq.prompt.length);
        seq.fed += take;
        this.#stats.promptTokens += take;
      }
    }
    if (tokens.length === 0) return undefined;
    const S = seqs.length;
    const R = this.#tableRow;
    const full = new Int32Array(S * R),
      sliding = new Int32Array(S * R);
    seqs.forEach((seq, i) => {
      full.set(seq.fullPages, i * R);
      // Released entries read as page 0: never read, as no query sees those positions.
      sliding.set(
        seq.slidingPages.map((p) => Math.max(0, p)),
        i * R,
      );
    });
    return {
      seqs,
      logitSeqs,
      args: {
        tokens: Int32Array.from(tokens),
        positions: Int32Array.from(positions),
        seqs: Int32Array.from(seqIdx),
        full: { table: full, ring: R, pageSize: this.pageSize },
        sliding: { table: sliding, ring: R, pageSize: this.pageSize },
        logitRows: Int32Array.from(logitRows),
        // No logits asked back: a backend may draw on the device and copy only the draws.
        out: null,
        sampling: [] as (NativeSampling | null)[],
      },
    };
  }

  /** Whether a sequence can be sampled now: unconstrained, or its constraint's mask is ready. */
  #ready(seq: Seq): boolean {
    return !seq.sampler.constraint || seq.prep === 'ready';
  }

  /** Starts working out the next mask of every constrained sequence that lacks one. */
  #startPreparing(): void {
    for (const seq of this.#running) {
      if (seq.state !== 'running' || !seq.sampler.constraint || seq.prep !== undefined) continue;
      const p: Promise<void> = seq.sampler
        .prepare()
        .then(() => {
          const mask = seq.sampler.constraint?.mask;
          if (mask && mask.every((w) => w === 0))
            this.#stop(
              seq,
              new UnsupportedError(
                'the output constraint allows no next token: the response format or a strict tool admits no finite document',
              ),
            );
          else if (seq.prep === p) seq.prep = 'ready';
        })
        .catch((e: unknown) => this.#stop(seq, e)); // this sequence alone fails
      seq.prep = p;
      seq.prepSince = performance.now();
    }
  }

  /**
   * Waits for the masks being worked out, but for each at most PREPARE_WAIT_MS from its start: a
   * sequence whose grammar is slow (its thread busy compiling another request's schema) sits out
   * the steps until it is ready, and the others run without it.
   */
  async #awaitPrepared(): Promise<void> {
    const now = performance.now();
    const fresh = this.#running.filter(
      (s) => s.state === 'running' && s.prep instanceof Promise && now - s.prepSince < PREPARE_WAIT_MS,
    );
    if (!fresh.length) return;
    const until = Math.max(...fresh.map((s) => s.prepSince)) + PREPARE_WAIT_MS - now;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(fresh.map((s) => s.prep)), new Promise((r) => (timer = setTimeout(r, until)))]);
    clearTimeout(timer);
  }

  #deliver(step: Step, results: (SampledToken | RowError | null)[]): void {
    for (const seq of step.seqs) {
      if (seq.generated === 0 && seq.limits.onPrefillProgress && seq.state === 'running')
        try {
          seq.limits.onPrefillProgress(seq.fed, seq.prompt.length);
        } catch (e) {
          this.#stop(seq, e); // the caller's callback failed: its request alone ends
        }
      // Whole prompt pages now written become reusable by later requests...
      const whole = Math.min(seq.keys.length, Math.floor(seq.fed / this.pageSize));
      for (; seq.published < whole; seq.published++)
        if (seq.slidingPages[seq.published] >= 0)
          this.#prefixes.publish(
            seq.keys[seq.published],
            seq.fullPages[seq.published],
            seq.slidingPages[seq.published],
          );
      // ...and sliding pages no future query can see go back (or stay cached as a prefix's).
      const next = seq.fed < seq.prompt.length ? seq.fed : seq.prompt.length + seq.generated;
      const keepFrom = Math.floor(Math.max(0, next - this.#window + 1) / this.pageSize);
      for (let k = 0; k < Math.min(keepFrom, seq.slidingPages.length); k++)
        if (seq.slidingPages[k] >= 0) {
          this.#sliding.release(seq.slidingPages[k], this.#prefixes.cachedSliding(seq.slidingPages[k]));
          seq.slidingPages[k] = -1;
        }
    }
    step.logitSeqs.forEach((seq, i) => {
      const r = results[i];
      if (seq.state !== 'running' || !r) return; // cancelled while the step ran
      if ('error' in r) return this.#stop(seq, r.error); // this sequence's draw failed (typed by lib/backend/native.ts)
      seq.generated++;
      this.#stats.generatedTokens++;
      seq.prep = undefined; // the next draw needs its own mask
      try {
        seq.sampler.record(r.token);
      } catch (e) {
        return this.#stop(seq, e); // its constraint refused the token: this sequence alone fails
      }
      if (seq.waiting) {
        seq.waiting.resolve(r);
        seq.waiting = undefined;
      } else seq.ready.push(r);
      const full = seq.generated >= seq.limits.maxTokens || seq.prompt.length + seq.generated >= seq.limits.maxContext;
      if (seq.limits.stopTokens.has(r.token) || full) {
        seq.state = 'done'; // the consumer still takes what is ready
        seq.unlisten();
      } else seq.pending = r.token;
    });
  }

  /**
   * Stops taking requests. By default lets every admitted and queued request finish; with
   * `abort: true` ends them at once with AbortedError. Frees the engine's memory (and the model,
   * when the engine loaded it).
   */
  async close(options: { abort?: boolean } = {}): Promise<void> {
    checkKeys(options, ['abort'], 'close');
    this.#closed = true;
    if (options.abort)
      for (const seq of [...this.#queue, ...this.#running]) this.#stop(seq, new AbortedError('the engine was closed'));
    if (this.#running.length || this.#queue.length) await new Promise<void>((resolve) => this.#idle.push(resolve));
    while (this.#pumping) await new Promise((r) => setTimeout(r, 1));
    this.#program.dispose();
    if (this.#ownsModel) this.model.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close({ abort: true });
  }
}

export async function createEngine(options: EngineOptions): Promise<Engine> {
  checkKeys(
    options,
    ['model', 'device', 'mode', 'maxSequences', 'maxContext', 'kvCacheBytes', 'maxBatchTokens', 'pageSize', 'maxQueue'],
    'createEngine',
  );
  if (options.model === undefined)
    throw new InvalidArgumentError('createEngine: model is required (a Model, a directory or a Hub id)');
  const owns = typeof options.model === 'string';
  const model =
    typeof options.model === 'string'
      ? await loadModel(options.model, { device: options.device, mode: options.mode })
      : options.model;
  try {
    const maxContext = checkInt(
      options.maxContext,
      'maxContext',
      Math.min(4096, model.config.maxContext),
      2,
      model.config.maxContext,
    );
    const o = {
      maxSequences: checkInt(options.maxSequences, 'maxSequences', 16, 1, 4096),
      maxContext,
      maxBatchTokens: checkInt(
        options.maxBatchTokens,
        'maxBatchTokens',
        model.device === 'cuda' ? CUDA_MAX_BATCH_TOKENS : CPU_MAX_BATCH_TOKENS,
        1,
        8192,
      ),
      pageSize: checkInt(options.pageSize, 'pageSize', 16, 1, 4096),
      maxQueue: checkInt(options.maxQueue, 'maxQueue', 256, 0),
      kvCacheBytes:
        options.kvCacheBytes === undefined ? undefined : checkInt(options.kvCacheBytes, 'kvCacheBytes', 0, 1),
    };
    // The pools are allocated whole, so a pool the device cannot hold is refused as a model is.
    const plan = kvPoolPlan(model.config, { ...o, kvDType: model.kvDType });
    const estimate = estimateMemory(model.config, {
      device: model.device,
      mode: model.mode,
      maxTokens: o.maxBatchTokens,
      maxLogitRows: engineLogitRows(o),
      kvBytes: plan.bytes,
      contextTokens: plan.fullPages * o.pageSize,
    });
    if (!estimate.fits)
      throw new InsufficientMemoryError(
        estimate,
        o.kvCacheBytes !== undefined
          ? `an engine with kvCacheBytes ${o.kvCacheBytes}`
          : `an engine of ${o.maxSequences} sequences x ${maxContext} positions`,
        'lower maxSequences or maxContext, or set a smaller kvCacheBytes',
      );
    return new Engine(model, owns, o);
  } catch (e) {
    if (owns) model.dispose();
    throw e;
  }
}
