// `gptoss chat` (interactive) and `gptoss generate` (one shot): the generation API in a terminal.
import { createInterface } from 'node:readline';

import { AbortedError, ContextOverflowError } from '../errors.js';
import type { ChatMessage, ChatOptions } from '../chat/generate.js';
import { type LoadProgress, loadModel, type Model } from '../engine/model.js';
import type { Device } from '../backend/device.js';
import { InvalidArgumentError as UsageError } from 'commander';
import { openCheckpoint } from '../checkpoint/checkpoint.js';
import { resolveModelDir } from '../checkpoint/hub.js';
import { servedModelId } from '../server/model-id.js';
import { byteBar } from './progress.js';

export interface ChatCliOptions {
  model: string;
  effort?: 'low' | 'medium' | 'high';
  hideReasoning?: boolean;
  showReasoning?: boolean;
  system?: string;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  json?: boolean;
  device?: Device;
  /** Positions the prompt and answer may use (--context). */
  context?: number;
}

/** Loads with a byte progress bar on stderr when it is a terminal. */
export async function loadWithProgress(dir: string, device: Device = 'cpu'): Promise<Model> {
  const bar = byteBar('loading weights |{bar}| {percentage}% {done}/{size} {duration}s');
  try {
    return await loadModel(dir, {
      device,
      prefetch: true,
      onProgress: (p: LoadProgress) => {
        if (p.phase === 'read') bar.update(p.bytesDone, p.bytesTotal);
      },
    });
  } finally {
    bar.stop();
  }
}

function chatOptions(o: ChatCliOptions): ChatOptions {
  const c: ChatOptions = { reasoningEffort: o.effort ?? 'medium', maxTokens: o.maxTokens ?? DEFAULT_MAX_TOKENS };
  for (const k of ['temperature', 'topP', 'topK', 'minP', 'seed'] as const) if (o[k] !== undefined) c[k] = o[k];
  if (o.system) c.instructions = o.system;
  return c;
}

/** Most tokens an answer gets unless --max-tokens says otherwise (cut to what the context has left). */
const DEFAULT_MAX_TOKENS = 2048;
/** The positions a chat's conversation may use unless --context says otherwise. */
export const DEFAULT_CHAT_CONTEXT = 8192;

/**
 * The context a run may use (--context, else `fallback`, within the model's), checked with
 * --max-tokens against the model's config before its weights are read: a number that cannot
 * work is said now, not after minutes of loading.
 */
async function contextFor(o: ChatCliOptions, fallback: number | undefined): Promise<number> {
  const max = (await openCheckpoint(await resolveModelDir(o.model))).config.maxContext;
  if (o.context !== undefined && o.context > max)
    throw new UsageError(`--context ${o.context} is beyond the model's context of ${max} positions`);
  const context = o.context ?? Math.min(fallback ?? max, max);
  if (o.maxTokens !== undefined && o.maxTokens >= context)
    throw new UsageError(
      `--max-tokens ${o.maxTokens} does not fit a context of ${context} positions (the prompt and the answer share it); ` +
        (context < max ? `--context raises it, up to the model's ${max}` : `that is the model's whole context`),
    );
  return context;
}

/** A line of prompt progress on stderr, on a terminal, for prompts long enough to take a while. */
function prefillProgress(): { onPrefillProgress?: (done: number, total: number) => void; clear(): void } {
  const err = process.stderr;
  if (!err.isTTY) return { clear: () => {} };
  let shown = false;
  const clear = () => {
    if (shown) err.write('\r\x1b[2K');
    shown = false;
  };
  return {
    onPrefillProgress: (done, total) => {
      if (total < 512) return;
      if (done >= total) return clear();
      err.write(`\r\x1b[2Kprompt: ${done}/${total} tokens (${Math.floor((100 * done) / total)}%)`);
      shown = true;
    },
    clear,
  };
}

/** Where the answer stopped short of --max-tokens because the context was full, says so. */
function contextNote(
  r: { finishReason: string; usage: { promptTokens: number; completionTokens: number } },
  o: ChatCliOptions,
  context: number,
): string | undefined {
  const asked = o.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (r.finishReason !== 'length' || r.usage.completionTokens >= asked) return undefined;
  return `the context is full: prompt ${r.usage.promptTokens} + answer ${r.usage.completionTokens} = ${r.usage.promptTokens + r.usage.completionTokens} of ${context} positions`;
}

const HELP = `Commands: /help this text; /reset clears the conversation; exit, quit or /exit (or Ctrl-D) ends.
End a line with \\ to continue it on the next. Ctrl-C stops the answer being written (and drops lines typed meanwhile); twice at the prompt exits.`;

/**
 * `gptoss chat`. Lines are queued and answered in turn, whether typed during an answer or piped
 * in; at the end of input the answers still owed are written, then it exits. On a terminal the
 * reasoning is dimmed; when stdout is not a terminal there are no escape codes and stdout carries
 * the answers only (the banner, reasoning and the status line of each answer go to stderr).
 */
export async function runChat(o: ChatCliOptions): Promise<void> {
  const context = await contextFor(o, DEFAULT_CHAT_CONTEXT);
  const model = await loadWithProgress(o.model, o.device);
  const ttyIn = process.stdin.isTTY === true;
  const ttyOut = process.stdout.isTTY === true;
  const out = process.stdout;
  // Everything but the answers: on the terminal with them, else on stderr.
  const side = ttyOut ? process.stdout : process.stderr;
  const dim = (s: string) => (ttyOut ? `\x1b[2m${s}\x1b[22m` : s);
  const history: ChatMessage[] = [];
  const showReasoning = !o.hideReasoning;
  // The prompt and the echo of what is typed go with everything but the answers.
  const rl = createInterface({ input: process.stdin, output: side, terminal: ttyIn });
  const prompt = (p = '> ') => {
    rl.setPrompt(p);
    if (ttyIn) rl.prompt();
  };

  const queue: string[] = [];
  let continued: string[] = []; // lines ending in \
  let current: AbortController | undefined;
  let busy = false;
  let quit = false;
  let inputEnded = false;
  let lastInterrupt = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));

  /** One answer: streams reasoning (unless hidden) and text, then the status line. */
  const answer = async (text: string) => {
    history.push({ role: 'user', content: text });
    const ac = new AbortController();
    current = ac;
    const progress = prefillProgress();
    let inReasoning = false;
    let wroteText = false;
    try {
      const gen = model.chat(history, {
        ...chatOptions(o),
        maxContext: context,
        signal: ac.signal,
        onPrefillProgress: progress.onPrefillProgress,
      });
      for await (const ev of gen) {
        if (ev.type === 'reasoning' && showReasoning) {
          side.write(dim(ev.delta));
          inReasoning = true;
        } else if (ev.type === 'text' || ev.type === 'commentary') {
          if (inReasoning) side.write(ttyOut ? '\n\n' : '\n');
          inReasoning = false;
          out.write(ev.delta);
          wroteText = true;
        } else if (ev.type === 'tool-call') {
          out.write(dim(`\n[tool call ${ev.name}(${ev.rawArguments})]`));
          wroteText = true;
        }
      }
      const r = await gen.result();
      history.push(r.message);
      if (inReasoning && !ttyOut) side.write('\n');
      if (wroteText || ttyOut) out.write('\n');
      const note = contextNote(r, o, context);
      side.write(
        `${dim(`[${r.finishReason}, ${r.usage.completionTokens} tokens, ${r.timings.tokensPerSecond.toFixed(1)} tokens/s]`)}\n` +
          (note ? dim(`(${note}: /reset clears the conversation; --context raises the limit)\n`) : ''),
      );
    } catch (e) {
      history.pop(); // the unanswered question leaves the history
      if (e instanceof AbortedError) side.write(dim('\n[stopped]\n'));
      else
        side.write(
          `\n${(e as Error).message}${e instanceof ContextOverflowError ? ' (/reset clears the conversation; --context raises the limit)' : ''}\n`,
        );
    } finally {
      progress.clear();
      current = undefined;
    }
  };

  const handle = async (text: string) => {
    const cmd = text.trim();
    if (cmd === '') return;
    if (['exit', 'quit', '/exit', '/quit'].includes(cmd)) {
      quit = true;
      return;
    }
    if (cmd === '/reset') {
      history.length = 0;
      side.write(dim('(conversation cleared)\n'));
      return;
    }
    if (cmd === '/help') {
      out.write(`${HELP}\n`);
      return;
    }
    if (/^\/\w+$/.test(cmd)) {
      side.write(`unknown command ${cmd}; /help lists them\n`);
      return;
    }
    // Piped into a terminal: show the question the answer is to.
    if (!ttyIn && ttyOut) out.write(`> ${text}\n`);
    await answer(text);
  };

  /** Answers the queued lines in turn; after the last, waits at the prompt or, input over, ends. */
  const pump = async () => {
    if (busy) return;
    busy = true;
    while (queue.length > 0 && !quit) await handle(queue.shift()!);
    busy = false;
    if (quit || inputEnded) {
      rl.close();
      return finish();
    }
    prompt();
  };

  // Ctrl-C stops the answer being written (and what was queued behind it); at the prompt, twice
  // in a row exits.
  const onInterrupt = () => {
    if (current) {
      queue.length = 0;
      current.abort();
      return;
    }
    if (Date.now() - lastInterrupt < 2000) {
      quit = true;
      rl.close();
      return;
    }
    lastInterrupt = Date.now();
    side.write('\n(Ctrl-C again or Ctrl-D to exit)\n');
    prompt();
  };
  rl.on('SIGINT', onInterrupt);
  process.on('SIGINT', onInterrupt);
  side.write(
    dim(
      `gpt-oss chat with ${servedModelId(o.model)} (${model.config.numLayers} layers, ${model.layout} layout, context ${context}). ` +
        `/help for commands; exit, quit or /exit (or Ctrl-D) ends.\n`,
    ),
  );
  prompt();
  rl.on('line', (line) => {
    if (quit) return;
    if (line.endsWith('\\')) {
      continued.push(line.slice(0, -1));
      if (!busy) prompt('. ');
      return;
    }
    queue.push([...continued, line].join('\n'));
    continued = [];
    void pump();
  });
  rl.on('close', () => {
    inputEnded = true;
    if (continued.length) queue.push(continued.join('\n'));
    continued = [];
    if (!busy) void pump();
  });
  await finished;
  process.off('SIGINT', onInterrupt);
  if (ttyOut) out.write('\n');
  model.dispose();
}

/** The prompt of `gptoss generate`: the argument, or stdin for `-` or no argument with stdin not a terminal. */
async function readPrompt(arg: string | undefined): Promise<string> {
  if (arg !== undefined && arg !== '-') return arg;
  if (arg === undefined && process.stdin.isTTY)
    throw new UsageError('give the prompt as an argument, or - to read it from stdin');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, ''); // what echo and a file's last line end with
  if (text.trim() === '') throw new UsageError('the prompt read from stdin is empty');
  return text;
}

export async function runGenerate(arg: string | undefined, o: ChatCliOptions): Promise<void> {
  const prompt = await readPrompt(arg);
  // No --context: what the prompt and the answer need, up to the model's context.
  const context = await contextFor(o, undefined);
  const model = await loadWithProgress(o.model, o.device);
  const progress = prefillProgress();
  try {
    const ac = new AbortController();
    const onInterrupt = () => ac.abort();
    process.on('SIGINT', onInterrupt);
    const gen = model.chat([{ role: 'user', content: prompt }], {
      ...chatOptions(o),
      maxContext: context,
      signal: ac.signal,
      onPrefillProgress: progress.onPrefillProgress,
    });
    if (o.json) {
      process.stdout.write(`${JSON.stringify(await gen.result())}\n`);
    } else {
      for await (const ev of gen) {
        if (ev.type === 'reasoning' && o.showReasoning)
          process.stderr.write(process.stderr.isTTY ? `\x1b[2m${ev.delta}\x1b[22m` : ev.delta);
        else if (ev.type === 'text') process.stdout.write(ev.delta);
        else if (ev.type === 'tool-call') process.stdout.write(`\n[tool call ${ev.name}(${ev.rawArguments})]`);
      }
      process.stdout.write('\n');
    }
    const note = contextNote(await gen.result(), o, context);
    if (note) process.stderr.write(`gptoss: the answer stopped because ${note}\n`);
    process.off('SIGINT', onInterrupt);
  } finally {
    progress.clear();
    model.dispose();
  }
}
