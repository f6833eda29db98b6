// Sampling settings, validated, and the per-sequence state (seeded RNG, counts of generated
// tokens for the penalties). The arithmetic runs natively on the worker thread right after the
// step that produced the logits (kernels/sample.h gives the order of operations).
import { randomBytes } from 'node:crypto';

import { InvalidArgumentError } from '../errors.js';
import { addon, type NativeSampling } from '../backend/native.js';
import { checkInt, checkKeys } from '../options.js';

export interface SamplingOptions {
  /** 0 (or anything below 1e-4) = greedy. Default 1.0, OpenAI's recommendation for gpt-oss. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). */
  topK?: number;
  /** Nucleus sampling: the smallest set holding this much probability. Default 1.0 (off). */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one (0 = off). */
  minP?: number;
  /** OpenAI presence penalty, in [-2, 2]: subtracted once from every token generated so far. */
  presencePenalty?: number;
  /** OpenAI frequency penalty, in [-2, 2]: subtracted once per occurrence so far. */
  frequencyPenalty?: number;
  /** CTRL-style repetition penalty (> 0; 1 = off): divides positive, multiplies negative logits of seen tokens. */
  repetitionPenalty?: number;
  /** Added to the logits of the given token ids, in [-100, 100] (OpenAI `logit_bias`). */
  logitBias?: Record<number, number>;
  /** Same seed, same prompt, same settings: same tokens. */
  seed?: number;
}

export const samplingKeys = [
  'temperature',
  'topK',
  'topP',
  'minP',
  'presencePenalty',
  'frequencyPenalty',
  'repetitionPenalty',
  'logitBias',
  'seed',
] as const;

/**
 * OpenAI's recommended settings for gpt-oss (kernels/MODEL.md, "Sampling defaults"): temperature
 * 1, top_p 1.
 */
export const DEFAULT_SAMPLING = { temperature: 1.0, topP: 1.0 } as const;

function range(v: unknown, name: string, lo: number, hi: number, fallback: number, integer = false): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v)))
    throw new InvalidArgumentError(
      `${name} must be ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${JSON.stringify(v)}`,
    );
  return v;
}

/** Limits which tokens may come next (a grammar, Harmony's structure): the backend awaits
 * prepare() before each draw, and each drawn token is accepted in order. */
export interface TokenConstraint {
  /** Works out the mask for the next draw. */
  prepare(): Promise<void>;
  /** The mask for the next draw (null: any token). */
  readonly mask: Int32Array | null;
  /** Advances past a drawn token. */
  accept(token: number): void;
  dispose(): void;
}

export class Sampler {
  readonly #base: Omit<NativeSampling, 'historyIds' | 'historyCounts' | 'rng'>;
  readonly #counts = new Map<number, number>();
  readonly rng = new BigUint64Array(1);
  readonly penalised: boolean;
  /** Report the model's log-probabilities with each draw: -1 none, else the alternatives wanted (0..20). */
  topLogprobs = -1;
  /** Constrained decoding, if any. */
  constraint: TokenConstraint | undefined;

  constructor(options: SamplingOptions, vocabSize: number) {
    checkKeys(options, samplingKeys, 'sampling');
    const o = options;
    const bias = Object.entries(o.logitBias ?? {});
    for (const [id, v] of bias) {
      const n = Number(id);
      if (!Number.isInteger(n) || n < 0 || n >= vocabSize)
        throw new InvalidArgumentError(`logitBias: ${id} is not a token id in [0, ${vocabSize})`);
      range(v, `logitBias[${id}]`, -100, 100, 0);
    }
    this.#base = {
      temperature: range(o.temperature, 'temperature', 0, 100, DEFAULT_SAMPLING.temperature),
      topK: range(o.topK, 'topK', 0, vocabSize, 0, true),
      topP: o.topP === undefined ? DEFAULT_SAMPLING.topP : range(o.topP, 'topP', 1e-6, 1, 1),
      minP: range(o.minP, 'minP', 0, 1, 0),
      presencePenalty: range(o.presencePenalty, 'presencePenalty', -2, 2, 0),
      frequencyPenalty: range(o.frequencyPenalty, 'frequencyPenalty', -2, 2, 0),
      repetitionPenalty:
        o.repetitionPenalty === undefined ? 1 : range(o.repetitionPenalty, 'repetitionPenalty', 1e-3, 100, 1),
      biasIds: Int32Array.from(bias.map(([id]) => Number(id))),
      biasValues: Float32Array.from(bias.map(([, v]) => v)),
      // Ids past Harmony's last named special token are padding rows; never sample them.
      banFrom: vocabSize > 200014 ? 200014 : -1,
    };
    this.penalised =
      this.#base.presencePenalty !== 0 || this.#base.frequencyPenalty !== 0 || this.#base.repetitionPenalty !== 1;
    const seed =
      o.seed === undefined
        ? randomBytes(8).readBigUInt64LE()
        : BigInt(range(o.seed, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 0, true));
    this.rng[0] = BigInt.asUintN(64, seed);
  }

  /** Readies the next draw's parameters (the constraint's mask); call before params(). */
  async prepare(): Promise<void> {
    await this.constraint?.prepare();
  }

  /** Counts a generated token for the penalties and moves the constraint past it. */
  record(token: number): void {
    this.constraint?.accept(token);
    if (this.penalised) this.#counts.set(token, (this.#counts.get(token) ?? 0) + 1);
  }

  /** The parameters for the next draw (the native side advances `rng`). */
  params(): NativeSampling {
    return {
      ...this.#base,
      historyIds: Int32Array.from(this.#counts.keys()),
      historyCounts: Int32Array.from(this.#counts.values()),
      rng: this.rng,
      ...(this.topLogprobs >= 0 && { topLogprobs: this.topLogprobs }),
      ...(this.constraint?.mask && { allowMask: this.constraint.mask }),
    };
  }
}

/** The most draws one sampleLogits() call makes: the result is allocated before the first draw. */
export const MAX_SAMPLE_COUNT = 1_000_000;

/** `count` draws from one row of logits with these settings (tests, statistics, custom loops). */
export async function sampleLogits(
  logits: Float32Array,
  options: SamplingOptions = {},
  count = 1,
): Promise<Int32Array> {
  if (!(logits instanceof Float32Array) || logits.length === 0)
    throw new InvalidArgumentError('sampleLogits: logits must be a non-empty Float32Array');
  checkInt(count, 'sampleLogits: count', 1, 1, MAX_SAMPLE_COUNT);
  const s = new Sampler(options, logits.length);
  const { rng, ...params } = s.params();
  return addon().sampleMany(logits, params, rng, count);
}
