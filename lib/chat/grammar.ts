// Grammars over o200k_harmony's tokens, by xgrammar (@mlc-ai/web-xgrammar, WASM): a JSON Schema
// is compiled once against the vocabulary, and a matcher per sequence gives the mask of tokens
// that keep the output a prefix of some valid document. xgrammar runs on threads of its own
// (lib/chat/grammar-worker.ts): a new schema is first compiled on a vetting thread within a time
// budget, where a schema that faults the compiler or takes too long costs only that thread (it is
// replaced); then on the serving thread, which holds the matchers. The event loop never waits on
// a compile, and one client's schema never breaks grammars for the others.
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

import { BusyError, GptOssError, InvalidArgumentError, OverloadedError, UnsupportedError } from '../errors.js';
import {
  FIRST_SPECIAL,
  GRAMMAR_VOCAB,
  type GrammarReply,
  type GrammarRequest,
  type MatcherStep,
  type StepResult,
} from './grammar-protocol.js';

type Ok = Extract<GrammarReply, { ok: true }>;
type Request = GrammarRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

// Under the test runner this module is lib/chat/grammar.ts: the thread runs the compiled JS in dist/chat/.
const workerFile = () =>
  import.meta.url.endsWith('.ts')
    ? new URL('../../dist/chat/grammar-worker.js', import.meta.url)
    : new URL('./grammar-worker.js', import.meta.url);

/** One xgrammar thread. Once it fails (its WASM faulted, it was terminated) it answers nothing more. */
class GrammarThread {
  readonly #worker: Worker;
  readonly #calls = new Map<number, { resolve: (r: Ok) => void; reject: (e: unknown) => void }>();
  readonly ready: Promise<void>;
  #next = 0;
  failed: unknown;

  constructor() {
    this.#worker = new Worker(workerFile(), { workerData: { grammar: true } });
    let settle!: { resolve: () => void; reject: (e: unknown) => void };
    this.ready = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    this.ready.catch(() => {});
    this.#worker.on('message', (m: GrammarReply) => {
      if ('op' in m) {
        if (this.#calls.size === 0) this.#worker.unref(); // an idle thread keeps no process alive
        return settle.resolve();
      }
      const call = this.#calls.get(m.id);
      if (!call) return;
      this.#calls.delete(m.id);
      if (this.#calls.size === 0) this.#worker.unref();
      if (m.ok) call.resolve(m);
      else call.reject(new Error(m.message));
    });
    const fail = (e: unknown) => {
      this.failed ??= e;
      settle.reject(this.failed);
      for (const c of this.#calls.values()) c.reject(this.failed);
      this.#calls.clear();
    };
    this.#fail = fail;
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => fail(new BusyError(`the grammar thread exited (code ${code})`)));
  }

  readonly #fail: (e: unknown) => void;

  async call(req: Request): Promise<Ok> {
    await this.ready;
    if (this.failed) throw this.failed;
    const id = this.#next++;
    this.#worker.ref();
    return new Promise<Ok>((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      this.#worker.postMessage({ ...req, id });
    });
  }

  // Matcher steps asked for in one turn of the event loop (the engine prepares every constrained
  // sequence of a step together) go to the thread as one message.
  #steps: { step: MatcherStep; resolve: (r: StepResult) => void; reject: (e: unknown) => void }[] = [];

  step(step: MatcherStep): Promise<StepResult> {
    return new Promise<StepResult>((resolve, reject) => {
      if (this.#steps.push({ step, resolve, reject }) > 1) return;
      queueMicrotask(() => {
        const batch = this.#steps;
        this.#steps = [];
        this.call({ op: 'steps', steps: batch.map((b) => b.step) }).then(
          (r) => batch.forEach((b, i) => b.resolve(r.results![i])),
          (e: unknown) => batch.forEach((b) => b.reject(e)),
        );
      });
    });
  }

  post(req: Extract<GrammarRequest, { op: 'dispose' }>): void {
    if (!this.failed) this.#worker.postMessage(req);
  }

  /** Fails every call in flight with `reason` and ends the thread. */
  terminate(reason: unknown): void {
    this.#fail(reason);
    void this.#worker.terminate();
  }
}

let serving: GrammarThread | undefined;
let vetting: GrammarThread | undefined;
const servingThread = () => (serving && !serving.failed ? serving : (serving = new GrammarThread()));
const vettingThread = () => (vetting && !vetting.failed ? vetting : (vetting = new GrammarThread()));

/** The longest a new schema may take to compile (its first compile, on the vetting thread). */
let compileBudgetMs = 5000;
/** @internal tests: a smaller budget. */
export function setCompileBudget(ms: number): void {
  compileBudgetMs = ms;
}

// One vetting compile at a time, so each one's budget counts its own time only.
let vetQueue: Promise<unknown> = Promise.resolve();
/** New schemas waiting for the vetting thread, the one it compiles included. */
let vetWaiting = 0;
/** Past this many waiting, a new schema is refused (OverloadedError: 429 and Retry-After on the
 * server): each may take the whole budget, and one client's flood would otherwise delay every
 * other client's new schema without end. */
let maxVetWaiting = 8;
/** @internal tests: a shorter queue. */
export function setVetQueueLimit(n: number): void {
  maxVetWaiting = n;
}

function vet(key: string): Promise<void> {
  if (vetWaiting >= maxVetWaiting)
    return Promise.reject(
      new OverloadedError(
        `${vetWaiting} new JSON Schemas are waiting to be compiled (up to ${compileBudgetMs} ms each); try again later, or reuse a schema compiled before`,
      ),
    );
  vetWaiting++;
  const run = async () => {
    const t = vettingThread();
    await t.ready;
    const timer = setTimeout(
      () =>
        t.terminate(
          new UnsupportedError(
            `the JSON Schema is too expensive to compile (over ${compileBudgetMs} ms); simplify it (fewer alternatives, smaller length and item bounds)`,
          ),
        ),
      compileBudgetMs,
    );
    try {
      await t.call({ op: 'compile', key, keep: false });
    } catch (e) {
      if (e instanceof GptOssError) throw e;
      t.terminate(e); // its WASM instance may be corrupt: a fresh thread vets the next schema
      throw new UnsupportedError(
        `the grammar compiler cannot compile this JSON Schema (${(e as Error)?.message ?? e})`,
        { cause: e },
      );
    } finally {
      clearTimeout(timer);
    }
  };
  const p = vetQueue.then(run, run);
  vetQueue = p.catch(() => {});
  void vetQueue.then(() => vetWaiting--);
  return p;
}

// Schemas compiled on the serving thread, by digest (the text itself can be large).
const compiled = new Map<string, Promise<void>>();
const MAX_COMPILED = 256;

/** Compiles (or finds compiled) the grammar of documents valid under `schema`; resolves to its key. */
export async function compileJsonSchema(schema: object): Promise<string> {
  const key = JSON.stringify(schema);
  const digest = createHash('sha256').update(key).digest('hex');
  let g = compiled.get(digest);
  if (g) compiled.delete(digest); // most recently used last
  g ??= vet(key).then(async () => {
    const t = servingThread();
    await t.call({ op: 'compile', key, keep: true }).catch((e: unknown) => {
      const err = threadFailure(e);
      t.terminate(err); // vetted, yet it failed here: this instance is not to be trusted further
      throw err;
    });
  });
  compiled.set(digest, g);
  g.catch(() => compiled.delete(digest));
  while (compiled.size > MAX_COMPILED) compiled.delete(compiled.keys().next().value as string);
  await g;
  return key;
}

let nextMatcher = 0;

// The serving thread failing fails its matchers' sequences, typed.
function threadFailure(e: unknown): unknown {
  return e instanceof GptOssError
    ? e
    : new BusyError(`the grammar thread failed: ${(e as Error)?.message ?? e}`, { cause: e });
}

/** One sequence's position in a grammar. `stop` is the token that may end a complete document. */
export class JsonMatcher {
  readonly #thread: GrammarThread;
  readonly #id: number;
  #pending = -1;

  private constructor(thread: GrammarThread, id: number) {
    this.#thread = thread;
    this.#id = id;
  }

  static async create(schema: object, stop: number): Promise<JsonMatcher> {
    const key = await compileJsonSchema(schema);
    const thread = servingThread();
    const mid = nextMatcher++;
    await thread.call({ op: 'matcher', mid, key, stop }).catch((e: unknown) => {
      throw threadFailure(e);
    });
    return new JsonMatcher(thread, mid);
  }

  /** Takes a drawn token; it is applied by the next step(). */
  accept(token: number): void {
    if (this.#pending >= 0)
      throw new InvalidArgumentError('constraint: a second token was accepted before the mask of the first was taken');
    this.#pending = token;
  }

  /**
   * Applies the accepted token and gives the mask for the next one: ceil(V / 32) words, bit
   * (id & 31) of word id >> 5 set = id may come next; null once the document is complete.
   */
  async step(): Promise<Int32Array | null> {
    const token = this.#pending;
    this.#pending = -1;
    const r = await this.#thread.step({ mid: this.#id, token }).catch((e: unknown) => {
      throw threadFailure(e);
    });
    if ('error' in r) throw threadFailure(new Error(r.error));
    if (r.refused) throw new InvalidArgumentError(`token ${token} does not continue the document the grammar allows`);
    return r.mask;
  }

  dispose(): void {
    this.#thread.post({ op: 'dispose', mid: this.#id });
  }
}

/** A mask allowing exactly these ids. */
export function maskOf(ids: Iterable<number>, vocab = GRAMMAR_VOCAB): Int32Array {
  const m = new Int32Array((vocab + 31) >>> 5);
  for (const id of ids) m[id >>> 5] |= 1 << (id & 31);
  return m;
}

/** A mask allowing every byte-pair token plus these ids. */
export function textMaskPlus(ids: Iterable<number>, vocab = GRAMMAR_VOCAB): Int32Array {
  const m = maskOf(ids, vocab);
  m.fill(-1, 0, FIRST_SPECIAL >>> 5);
  for (let id = FIRST_SPECIAL & ~31; id < FIRST_SPECIAL; id++) m[id >>> 5] |= 1 << (id & 31);
  return m;
}
