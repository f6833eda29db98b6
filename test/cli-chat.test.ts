// gptoss chat, generate, bench and inspect as a person uses them: chat runs in a pseudo-terminal
// (util-linux `script` allocates it), keystrokes go in, the screen comes out.
import { execFile, spawn } from 'node:child_process';
import { basename } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
let dir: string;

beforeAll(() => {
  dir = tinyRealVocabCheckpoint(9, { window: 8 });
});

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function terminal(args: string[]) {
  const child = spawn('script', ['-qfec', [process.execPath, cli, ...args].map(quote).join(' '), '/dev/null'], {
    env: { ...process.env, TERM: 'xterm', COLUMNS: '120', LINES: '40' },
  });
  let screen = '';
  child.stdout.on('data', (d: Buffer) => (screen += d.toString()));
  child.stderr.on('data', (d: Buffer) => (screen += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let mark = 0;
  return {
    type: (s: string) => child.stdin.write(s),
    /** Waits until the screen, after what earlier waits consumed, matches. */
    async waitFor(re: RegExp, ms = 30000): Promise<string> {
      const t0 = Date.now();
      for (;;) {
        const m = re.exec(screen.slice(mark));
        if (m) {
          mark += m.index + m[0].length;
          return m[0];
        }
        if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${re}; screen:\n${screen}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    exited,
    screen: () => screen,
    kill: () => child.kill('SIGKILL'),
  };
}

describe('gptoss chat in a terminal', () => {
  let t: ReturnType<typeof terminal> | undefined;
  afterAll(() => t?.kill());

  it('answers, continues a line ending in \\, clears with /reset and exits on Ctrl-D', async () => {
    t = terminal(['chat', '--model', dir, '--max-tokens', '12', '--seed', '1', '--effort', 'low']);
    await t.waitFor(/gpt-oss chat with gptoss-test-\w+ \(2 layers, hf layout, context 8192\)/);
    await t.waitFor(/> /);
    t.type('Hello there\r');
    await t.waitFor(/\[length, 12 tokens, [\d.]+ tokens\/s\]/);
    await t.waitFor(/> /);
    t.type('first line\\\r');
    await t.waitFor(/\. /); // continuation prompt
    t.type('second line\r');
    await t.waitFor(/\[length, 12 tokens/);
    t.type('/reset\r');
    await t.waitFor(/conversation cleared/);
    t.type('\x04'); // Ctrl-D
    expect(await t.exited).toBe(0);
  });

  it('lines typed while an answer streams are answered after it, in turn; exit ends', async () => {
    t = terminal(['chat', '--model', dir, '--max-tokens', '12', '--seed', '1', '--effort', 'low']);
    await t.waitFor(/> /);
    t.type('one\rtwo\r');
    await t.waitFor(/\[length, 12 tokens/);
    await t.waitFor(/\[length, 12 tokens/);
    await t.waitFor(/> /);
    t.type('exit\r');
    expect(await t.exited).toBe(0);
  });

  it('Ctrl-C stops the answer being written without exiting; twice at the prompt exits', async () => {
    t = terminal(['chat', '--model', dir, '--max-tokens', '8000', '--seed', '2']);
    await t.waitFor(/> /);
    t.type('Write forever\r');
    await new Promise((r) => setTimeout(r, 700));
    t.type('\x03');
    await t.waitFor(/\[stopped\]/);
    await t.waitFor(/> /);
    t.type('\x03');
    await t.waitFor(/Ctrl-C again/);
    t.type('\x03');
    expect(await t.exited).toBe(0);
  });
});

/** The CLI with `input` piped to stdin (a pipe, not a terminal, on every stream). */
function piped(args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args]);
  let stdout = '',
    stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('gptoss chat with piped input', () => {
  const chat = ['chat', '--model', '', '--max-tokens', '6', '--seed', '3', '--effort', 'low'];
  const status = /^\[length, 6 tokens, [\d.]+ tokens\/s\]$/gm;

  it('answers every line in turn, then exits 0 at the end of input; no escape codes; stdout holds the answers', async () => {
    chat[2] = dir;
    const r = await piped(chat, 'hi\nwho are you\n');
    expect(r.code).toBe(0);
    expect(r.stderr.match(status)).toHaveLength(2);
    expect(r.stderr).not.toContain('[stopped]');
    expect(r.stdout + r.stderr).not.toContain('\x1b');
    expect(r.stdout).not.toMatch(/\[length|gpt-oss chat/);
    // The banner names the model and the ways out.
    expect(r.stderr).toContain(`gpt-oss chat with ${basename(dir)} (2 layers, hf layout, context 8192)`);
    expect(r.stderr).toContain('exit, quit or /exit');
    // The last line needs no newline.
    expect((await piped(chat, 'hi')).stderr.match(status)).toHaveLength(1);
  });

  it('exit, quit and /exit end it (what follows is not sent); /help is answered here, not by the model', async () => {
    chat[2] = dir;
    for (const word of ['exit', 'quit', '/exit']) {
      const r = await piped(chat, `/help\nhi\n${word}\nnever sent\n`);
      expect(r.code, word).toBe(0);
      expect(r.stderr.match(status), word).toHaveLength(1);
      expect(r.stdout).toContain('Commands: /help this text; /reset clears the conversation; exit, quit or /exit');
    }
  });
});

describe('gptoss generate', () => {
  it('answers one prompt; --json gives the whole result', async () => {
    const run = promisify(execFile);
    const { stdout } = await run(process.execPath, [
      cli,
      'generate',
      '--model',
      dir,
      'Hi',
      '--max-tokens',
      '5',
      '--seed',
      '4',
      '--json',
    ]);
    const r = JSON.parse(stdout);
    expect(r.usage.completionTokens).toBe(5);
    expect(r.finishReason).toBe('length');
    const plain = await run(process.execPath, [
      cli,
      'generate',
      '--model',
      dir,
      'Hi',
      '--max-tokens',
      '5',
      '--seed',
      '4',
    ]);
    expect(plain.stdout.trim()).toBe(r.text.trim());
  });

  it('inspect describes a checkpoint without loading it', async () => {
    const run = promisify(execFile);
    const { stdout } = await run(process.execPath, [cli, 'inspect', dir, '--json']);
    const info = JSON.parse(stdout);
    expect(info.layout).toBe('hf');
    expect(info.tensors).toBe(3 + 2 * 19);
    expect(info.config.vocabSize).toBe(201088);
  });
});

describe('gptoss generate: the prompt from stdin, and the context', () => {
  const run = (args: string[]) => piped(['generate', '--model', dir, ...args], '');

  it('- (or no argument, stdin not a terminal) reads the prompt from stdin', async () => {
    const args = ['generate', '--model', dir, '--max-tokens', '5', '--seed', '4', '--json'];
    const want = JSON.parse((await piped([...args, 'Hi there'], '')).stdout);
    for (const a of [['-'], []]) {
      const r = await piped([...args, ...a], 'Hi there\n');
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).tokens).toEqual(want.tokens);
    }
    const empty = await piped(['generate', '--model', dir, '-'], '\n');
    expect(empty.code).toBe(2);
    expect(empty.stderr.trim()).toBe('gptoss: the prompt read from stdin is empty');
  });

  it('--max-tokens beyond the context, or --context beyond the model, is refused before loading', async () => {
    const big = await run(['--max-tokens', '1000000000', 'x']);
    expect(big.code).toBe(2);
    expect(big.stderr.trim()).toBe(
      "gptoss: --max-tokens 1000000000 does not fit a context of 131072 positions (the prompt and the answer share it); that is the model's whole context",
    );
    const chat = await piped(['chat', '--model', dir, '--max-tokens', '9000'], '');
    expect(chat.code).toBe(2);
    expect(chat.stderr.trim()).toBe(
      "gptoss: --max-tokens 9000 does not fit a context of 8192 positions (the prompt and the answer share it); --context raises it, up to the model's 131072",
    );
    const ctx = await piped(['chat', '--model', dir, '--context', '1000000'], '');
    expect(ctx.code).toBe(2);
    expect(ctx.stderr.trim()).toBe("gptoss: --context 1000000 is beyond the model's context of 131072 positions");
  });

  it('an answer cut short by a full context says so', async () => {
    const r = await run(['--context', '80', '--max-tokens', '50', '--seed', '1', 'x']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(
      /^gptoss: the answer stopped because the context is full: prompt (\d+) \+ answer (\d+) = 80 of 80 positions$/m,
    );
  });

  it('--help gives the default context', async () => {
    expect((await piped(['chat', '--help'], '')).stdout).toMatch(
      /--context <n>\s+positions the conversation may use.*\(default\s+8192/s,
    );
    expect((await piped(['generate', '--help'], '')).stdout).toMatch(
      /--context <n>\s+positions the prompt and answer may use/,
    );
  });

  it('a long prompt shows its progress on a terminal', async () => {
    const t = terminal(['generate', '--model', dir, '--max-tokens', '2', 'word '.repeat(700)]);
    await t.waitFor(/prompt: 128\/\d+ tokens \(\d+%\)/);
    expect(await t.exited).toBe(0);
  });
});

describe('gptoss bench on a terminal', () => {
  it('prints the table without the JSON line (that is for --json and pipes)', async () => {
    const t = terminal([
      'bench',
      '--synthetic',
      '20b',
      '--layers',
      '1',
      '--prefill-tokens',
      '8',
      '--decode-tokens',
      '2',
    ]);
    expect(await t.exited).toBe(0);
    expect(t.screen()).toContain('ratio to host read bandwidth');
    expect(t.screen()).not.toContain('{"bench"');
  });
});

describe('gptoss check on a terminal', () => {
  it('prints the table without the JSON line', async () => {
    const t = terminal(['check']);
    expect(await t.exited).toBe(0);
    expect(t.screen()).toMatch(/cpu: 64 of 64 checks within tolerance/);
    expect(t.screen()).not.toContain('{"device"');
  });
});

describe('gptoss inspect: whether it fits, and why not', () => {
  const run = async (args: string[]) => {
    try {
      return { code: 0, ...(await promisify(execFile)(process.execPath, [cli, ...args])) };
    } catch (e) {
      return e as { code: number; stdout: string; stderr: string };
    }
  };

  it('sizes against the RAM available now and says both figures', async () => {
    const j = JSON.parse((await run(['inspect', dir, '--json'])).stdout).memory;
    expect(j.availableBytes).toBeGreaterThan(0);
    expect(j.availableBytes).toBeLessThanOrEqual(j.deviceBytes);
    expect(j.fitsAvailable).toBe(true);
    const r = await run(['inspect', dir]);
    expect(r.stdout).toMatch(
      /memory on cpu\s+[\d.]+ GB needed, [\d.]+ GB available now of [\d.]+ GB on this host: fits\n/,
    );
  });

  it('--device cuda without a GPU says why instead of "0 GB: does NOT fit"', async () => {
    const { deviceInfo } = await import('../lib/backend/native.js');
    const cuda = deviceInfo().cuda;
    const r = await run(['inspect', dir, '--device', 'cuda']);
    expect(r.code).toBe(0);
    if (cuda.available) expect(r.stdout).toMatch(/GB on this GPU: fits/);
    else {
      expect(r.stdout).toContain(`no GPU to size it for: ${cuda.error}`);
      expect(r.stdout).not.toContain('does NOT fit');
      expect(JSON.parse((await run(['inspect', dir, '--device', 'cuda', '--json'])).stdout).memory.unavailable).toBe(
        cuda.error,
      );
    }
  });

  it("--context beyond the model's context is refused, naming both", async () => {
    const r = await run(['inspect', dir, '--context', '1000000']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("gptoss: --context 1000000 is beyond the model's context of 131072 positions");
    expect((await run(['inspect', dir, '--context', '131072'])).code).toBe(0);
  });
});
