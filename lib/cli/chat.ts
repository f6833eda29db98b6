// `gptoss chat` (interactive) and `gptoss generate` (one shot): the generation API in a terminal.
import { createInterface } from 'node:readline';

import { SingleBar } from 'cli-progress';

import { AbortedError } from '../errors.js';
import type { ChatMessage, ChatOptions } from '../chat/generate.js';
import { type LoadProgress, loadModel, type Model } from '../engine/model.js';
import type { Device } from '../backend/device.js';

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
}

const dim = (s: string) => `\x1b[2m${s}\x1b[22m`;

/** Loads with a byte progress bar on stderr when it is a terminal. */
export async function loadWithProgress(dir: string, device: Device = 'cpu'): Promise<Model> {
  const tty = process.stderr.isTTY;
  const bar = tty
    ? new SingleBar({
        format: 'loading weights |{bar}| {percentage}% {value}/{total} MB {duration}s',
        hideCursor: true,
        stream: process.stderr,
      })
    : undefined;
  let started = false;
  const model = await loadModel(dir, {
    device,
    prefetch: true,
    onProgress: (p: LoadProgress) => {
      if (!bar || p.phase !== 'read') return;
      if (!started) bar.start(Math.ceil(p.bytesTotal / 1e6), 0);
      started = true;
      bar.update(Math.floor(p.bytesDone / 1e6));
    },
  });
  bar?.stop();
  return model;
}

function chatOptions(o: ChatCliOptions): ChatOptions {
  const c: ChatOptions = { reasoningEffort: o.effort ?? 'medium', maxTokens: o.maxTokens ?? 2048 };
  for (const k of ['temperature', 'topP', 'topK', 'minP', 'seed'] as const) if (o[k] !== undefined) c[k] = o[k];
  if (o.system) c.instructions = o.system;
  return c;
}

/** One turn: streams reasoning (dimmed, unless hidden) and the answer; returns the assistant message. */
async function turn(
  model: Model,
  history: ChatMessage[],
  o: ChatCliOptions,
  signal: AbortSignal,
  showReasoning: boolean,
) {
  const out = process.stdout;
  let inReasoning = false;
  const gen = model.chat(history, { ...chatOptions(o), signal });
  for await (const ev of gen) {
    if (ev.type === 'reasoning' && showReasoning) {
      out.write(dim(ev.delta));
      inReasoning = true;
    } else if (ev.type === 'text' || ev.type === 'commentary') {
      if (inReasoning) out.write('\n\n');
      inReasoning = false;
      out.write(ev.delta);
    } else if (ev.type === 'tool-call') {
      out.write(dim(`\n[tool call ${ev.name}(${ev.rawArguments})]`));
    } else if (ev.type === 'done') {
      out.write(
        `\n${dim(`[${ev.finishReason}, ${ev.usage.completionTokens} tokens, ${ev.timings.tokensPerSecond.toFixed(1)} tokens/s]`)}\n`,
      );
    }
  }
  return (await gen.result()).message;
}

export async function runChat(o: ChatCliOptions): Promise<void> {
  const model = await loadWithProgress(o.model, o.device);
  const history: ChatMessage[] = [];
  const showReasoning = !o.hideReasoning;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  let current: AbortController | undefined;
  let lastInterrupt = 0;
  // Ctrl-C stops the answer being written; at the prompt, twice in a row exits.
  const onInterrupt = () => {
    if (current) {
      current.abort();
      return;
    }
    if (Date.now() - lastInterrupt < 2000) {
      rl.close();
      return;
    }
    lastInterrupt = Date.now();
    process.stdout.write('\n(Ctrl-C again or Ctrl-D to exit)\n');
    rl.prompt();
  };
  rl.on('SIGINT', onInterrupt);
  process.on('SIGINT', onInterrupt);
  process.stdout.write(
    dim(
      `gpt-oss chat: ${model.config.numLayers} layers, ${model.layout} layout. End a line with \\ to continue it; /reset clears the conversation; Ctrl-D exits.\n`,
    ),
  );
  rl.setPrompt('> ');
  rl.prompt();
  let pending: string[] = [];
  let busy = Promise.resolve();
  rl.on('line', (line) => {
    if (current) return; // typed while an answer streams: ignored
    if (line.endsWith('\\')) {
      pending.push(line.slice(0, -1));
      rl.setPrompt('. ');
      rl.prompt();
      return;
    }
    const text = [...pending, line].join('\n');
    pending = [];
    rl.setPrompt('> ');
    if (text.trim() === '') return rl.prompt();
    if (text.trim() === '/reset') {
      history.length = 0;
      process.stdout.write(dim('(conversation cleared)\n'));
      return rl.prompt();
    }
    if (text.trim() === '/exit') return rl.close();
    history.push({ role: 'user', content: text });
    const ac = new AbortController();
    current = ac;
    busy = turn(model, history, o, ac.signal, showReasoning)
      .then((msg) => {
        history.push(msg);
      })
      .catch((e: unknown) => {
        if (e instanceof AbortedError) process.stdout.write(dim('\n[stopped]\n'));
        else process.stdout.write(`\n${(e as Error).message}\n`);
        history.pop(); // the unanswered question leaves the history
      })
      .finally(() => {
        current = undefined;
        rl.prompt();
      });
  });
  await new Promise<void>((resolve) => rl.on('close', resolve));
  current?.abort();
  await busy;
  process.off('SIGINT', onInterrupt);
  process.stdout.write('\n');
  model.dispose();
}

export async function runGenerate(prompt: string, o: ChatCliOptions): Promise<void> {
  const model = await loadWithProgress(o.model, o.device);
  try {
    const ac = new AbortController();
    const onInterrupt = () => ac.abort();
    process.on('SIGINT', onInterrupt);
    const gen = model.chat([{ role: 'user', content: prompt }], { ...chatOptions(o), signal: ac.signal });
    if (o.json) {
      process.stdout.write(`${JSON.stringify(await gen.result())}\n`);
    } else {
      for await (const ev of gen) {
        if (ev.type === 'reasoning' && o.showReasoning)
          process.stderr.write(process.stderr.isTTY ? dim(ev.delta) : ev.delta);
        else if (ev.type === 'text') process.stdout.write(ev.delta);
        else if (ev.type === 'tool-call') process.stdout.write(`\n[tool call ${ev.name}(${ev.rawArguments})]`);
      }
      process.stdout.write('\n');
    }
    process.off('SIGINT', onInterrupt);
  } finally {
    model.dispose();
  }
}
