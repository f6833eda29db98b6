// `gptoss bench mask`: what constrained decoding costs per decode step. A JSON document valid
// under a realistic schema is replayed through one constraint per sequence (the masks the engine
// would compute before each step, then the token accepted), and set against the engine's decode
// step at the same batch size, measured in the same run. The masks run on the JS thread before
// each step, so their time adds to the step's: the ratio is the slowdown.
import { createEngine } from '../engine/engine.js';
import { fingerprint, median } from './run.js';
import { compileJsonSchema } from '../chat/grammar.js';
import { chatConstraint } from '../chat/structured.js';
import { createSyntheticModel, type Preset } from '../engine/synthetic.js';
import { getTokenizer, TOKENS } from '../chat/tokenizer.js';

export interface MaskBenchOptions {
  synthetic?: Preset;
  layers?: number;
  batches?: number[];
  /** Decode steps timed per batch size. */
  steps?: number;
  log?: (line: string) => void;
}

export interface MaskBenchResult {
  bench: 'mask';
  model: string;
  fingerprint: Record<string, string | number>;
  schema: string;
  documentTokens: number;
  /** First use of the schema: the grammar compiled against the vocabulary (cached afterwards). */
  compileMs: number;
  /** maskMsPerStep: the mean over the document's tokens for all `batch` sequences. */
  rows: {
    batch: number;
    maskMsPerStep: number;
    maskMsPerStepMedian: number;
    maskMsPerStepP99: number;
    maskUsPerToken: number;
    stepMs: number;
    ratioToStep: number;
  }[];
}

// A product record: free strings, bounded numbers, enums, an array of objects.
const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    price: { type: 'number', minimum: 0 },
    currency: { enum: ['EUR', 'USD', 'GBP'] },
    inStock: { type: 'boolean' },
    tags: { type: 'array', items: { type: 'string' }, maxItems: 8 },
    variants: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{4}$' },
          size: { enum: ['S', 'M', 'L', 'XL'] },
          stock: { type: 'integer', minimum: 0 },
        },
        required: ['sku', 'size', 'stock'],
      },
    },
    description: { type: 'string' },
  },
  required: ['name', 'price', 'currency', 'inStock', 'tags', 'variants', 'description'],
  additionalProperties: false,
};
const DOCUMENT = {
  name: 'Merino wool crew-neck sweater',
  price: 89.5,
  currency: 'EUR',
  inStock: true,
  tags: ['knitwear', 'wool', 'winter', 'men'],
  variants: [
    { sku: 'MWS-0001', size: 'S', stock: 12 },
    { sku: 'MWS-0002', size: 'M', stock: 0 },
    { sku: 'MWS-0003', size: 'L', stock: 7 },
  ],
  description:
    'A fine-gauge sweater knitted from 100% extra-fine merino wool; soft, warm and breathable, with ribbed cuffs and hem.',
};

// JSON in the grammar's spacing: one line, ", " and ": ".
function dumps(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(dumps).join(', ')}]`;
  if (v && typeof v === 'object')
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}: ${dumps(x)}`)
      .join(', ')}}`;
  return JSON.stringify(v);
}

export async function runMaskBench(options: MaskBenchOptions = {}): Promise<MaskBenchResult> {
  const log = options.log ?? (() => {});
  const preset = options.synthetic ?? '20b';
  const batches = options.batches ?? [1, 32];
  const steps = options.steps ?? 16;
  const tok = getTokenizer();
  const text = dumps(DOCUMENT);
  const doc = [TOKENS.channel, ...tok.encode('final'), TOKENS.message, ...tok.encode(text), TOKENS.return];

  log('compiling the grammar (vocabulary preprocessing on first use)...');
  let t = performance.now();
  await compileJsonSchema(SCHEMA);
  const compileMs = performance.now() - t;

  log(`generating synthetic gpt-oss-${preset} weights (${options.layers ?? 2} layers)...`);
  const model = await createSyntheticModel({ preset, layers: options.layers ?? 2, seed: 1 });
  const rows: MaskBenchResult['rows'] = [];
  try {
    const maxBatch = Math.max(...batches);
    const engine = await createEngine({
      model,
      maxSequences: maxBatch,
      maxBatchTokens: Math.max(256, maxBatch),
      maxContext: 64 + steps * 2,
    });
    try {
      for (const B of batches) {
        log(`batch ${B}: ${steps} decode steps...`);
        // Decode steps: B sequences with 8-token prompts; the first steps (prompts) are left out.
        const before = engine.stats();
        const gens = Array.from({ length: B }, (_, i) =>
          engine.complete(
            Array.from({ length: 8 }, (_, j) => 1000 + i * 8 + j),
            { maxTokens: steps + 2, stopTokens: [], seed: i },
          ),
        );
        const results = Promise.all(gens.map((g) => g.result()));
        let mark = engine.stats();
        while (engine.stats().steps < before.steps + 2) await new Promise((r) => setImmediate(r));
        mark = engine.stats();
        await results;
        const after = engine.stats();
        const stepMs = (after.stepMsTotal - mark.stepMsTotal) / Math.max(1, after.steps - mark.steps);

        log(`batch ${B}: masks over a ${doc.length}-token document...`);
        const cs = Array.from({ length: B }, () =>
          chatConstraint(SCHEMA, new Map(), [], 'auto', model.config.vocabSize)!,
        );
        const per: number[] = [];
        for (const id of doc) {
          t = performance.now();
          await Promise.all(cs.map((c) => c.prepare())); // as the engine does: the grammar thread takes them in one go
          per.push(performance.now() - t);
          for (const c of cs) c.accept(id);
        }
        for (const c of cs) c.dispose();
        // The mean, not the median: the first visit of a grammar state costs milliseconds.
        const maskMs = per.reduce((a, b) => a + b, 0) / per.length;
        const p99 = [...per].sort((a, b) => a - b)[Math.floor(per.length * 0.99)];
        rows.push({
          batch: B,
          maskMsPerStep: maskMs,
          maskMsPerStepMedian: median(per),
          maskMsPerStepP99: p99,
          maskUsPerToken: (maskMs * 1e3) / B,
          stepMs,
          ratioToStep: maskMs / stepMs,
        });
      }
    } finally {
      await engine.close();
    }
  } finally {
    model.dispose();
  }
  return {
    bench: 'mask',
    model: `synthetic-${preset} (${options.layers ?? 2} layers)`,
    fingerprint: fingerprint(),
    schema: 'product record (strings, number, enum, boolean, arrays, nested objects, pattern)',
    documentTokens: doc.length,
    compileMs,
    rows,
  };
}

export function formatMaskBench(r: MaskBenchResult): string {
  const lines = [
    `model ${r.model}; schema: ${r.schema}; document ${r.documentTokens} tokens; grammar compile ${r.compileMs.toFixed(0)} ms (first use)`,
    'batch  mask ms/step (mean, median, p99)  mask us/token  decode step ms  mask / step',
    ...r.rows.map(
      (x) =>
        `${String(x.batch).padStart(5)}  ${`${x.maskMsPerStep.toFixed(3)}, ${x.maskMsPerStepMedian.toFixed(3)}, ${x.maskMsPerStepP99.toFixed(3)}`.padStart(32)}  ${x.maskUsPerToken.toFixed(1).padStart(13)}  ${x.stepMs.toFixed(2).padStart(14)}  ${(x.ratioToStep * 100).toFixed(2).padStart(10)}%`,
    ),
  ];
  return lines.join('\n');
}
