#!/usr/bin/env node
// The gptoss command: `logits` (check any backend against a reference) and `bench`.
import { writeFile } from 'node:fs/promises';

import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';

import { formatBench, runBench } from './bench.js';
import { GptOssError } from './errors.js';
import { loadModel } from './model.js';

const program = new Command();
program.name('gptoss').description('Run gpt-oss-20b / gpt-oss-120b from Node.js').showHelpAfterError();

const positiveInt = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new CommanderArgError(`${name} must be a positive integer`);
  return n;
};

function parseTokens(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const ids = parts.map(Number);
  const bad = parts.findIndex((s, i) => !/^\d+$/.test(s) || !Number.isSafeInteger(ids[i]));
  if (bad >= 0) throw new CommanderArgError(`token ${JSON.stringify(parts[bad])} is not a non-negative integer`);
  if (ids.length === 0) throw new CommanderArgError('no tokens given');
  return ids;
}

program
  .command('logits')
  .description('write the logits of every position as float32 little-endian [tokens, vocab]')
  .requiredOption('--model <dir>', 'checkpoint directory (Hugging Face or original layout)')
  .requiredOption('--tokens <ids>', 'comma-separated token ids', parseTokens)
  .requiredOption('--out <file>', 'output file')
  .addOption(new Option('--mode <mode>', 'precision mode').choices(['default', 'fp32']).default('default'))
  .addOption(new Option('--device <device>', 'backend').choices(['cpu', 'cuda']).default('cpu'))
  .option('--decode', 'feed the tokens one at a time through the KV cache instead of one prefill')
  .option('--max-tokens <n>', 'tokens per step of a prefill', positiveInt('--max-tokens'))
  .action(async (o: { model: string; tokens: number[]; out: string; mode: 'default' | 'fp32'; device: 'cpu' | 'cuda'; decode?: boolean; maxTokens?: number }) => {
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
        for (let i = 0; i < o.tokens.length; i++) logits.set(await session.forward([o.tokens[i]], { logits: 'last' }), i * V);
      } else {
        logits = await session.forward(o.tokens);
      }
      await writeFile(o.out, new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
      process.stderr.write(`wrote ${o.tokens.length}x${V} float32 logits to ${o.out}\n`);
    } finally {
      model.dispose();
    }
  });

program
  .command('bench')
  .description('decode and prefill speed, and the share of memory bandwidth decode reaches')
  .option('--model <dir>', 'checkpoint directory')
  .addOption(new Option('--synthetic <preset>', 'random weights of the real shapes, no download').choices(['20b', '120b']))
  .option('--layers <n>', 'layers of a synthetic model (default 2)', positiveInt('--layers'))
  .addOption(new Option('--device <device>', 'backend').choices(['cpu', 'cuda']).default('cpu'))
  .option('--prefill-tokens <n>', 'prompt length', positiveInt('--prefill-tokens'), 128)
  .option('--decode-tokens <n>', 'tokens to decode', positiveInt('--decode-tokens'), 16)
  .option('--json', 'print only the JSON line')
  .action(async (o: { model?: string; synthetic?: '20b' | '120b'; layers?: number; device: 'cpu' | 'cuda'; prefillTokens: number; decodeTokens: number; json?: boolean }) => {
    if (o.model && o.synthetic) throw new CommanderArgError('pass --model or --synthetic, not both');
    const r = await runBench({
      model: o.model,
      synthetic: o.model ? undefined : (o.synthetic ?? '20b'),
      layers: o.model ? undefined : (o.layers ?? 2),
      device: o.device,
      prefillTokens: o.prefillTokens,
      decodeTokens: o.decodeTokens,
      log: o.json || !process.stderr.isTTY ? undefined : (l) => process.stderr.write(`${l}\n`),
    });
    if (!o.json) process.stdout.write(`${formatBench(r)}\n`);
    process.stdout.write(`${JSON.stringify(r)}\n`);
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
  throw e;
});
