// gptoss chat, generate, bench and inspect as a person uses them: chat runs in a pseudo-terminal
// (util-linux `script` allocates it), keystrokes go in, the screen comes out.
import { execFile, spawn } from 'node:child_process';
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
    await t.waitFor(/gpt-oss chat: 2 layers/);
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

  it('Ctrl-C stops the answer being written without exiting; twice at the prompt exits', async () => {
    t = terminal(['chat', '--model', dir, '--max-tokens', '100000', '--seed', '2']);
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
