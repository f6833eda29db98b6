// Progress bars on a terminal: the weights load bar and the pull bar end at 100%, and a pull of a
// model already in the cache draws no bar and no speed. The CLI cases run under a pseudo-terminal
// (util-linux `script`), as a user sees them.
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { byteBar } from '../lib/cli/progress.js';
import { fixtures, tmpDir } from './helpers/checkpoint.js';
import { type FakeHub, startFakeHub } from './helpers/hub-server.js';

const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
const hasScript = (() => {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** A terminal's output, its escape sequences taken out: each redraw of a line as one string. */
function redraws(raw: string): string[] {
  return (
    raw
      // eslint-disable-next-line no-control-regex
      .replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '\n')
      .split(/[\r\n]+/)
      .map((l) => l.trim())
      .filter(Boolean)
  );
}

/** `gptoss args` with a pseudo-terminal for stdin, stdout and stderr; what the terminal showed. */
async function onTerminal(args: string[], env: Record<string, string> = {}, input?: string) {
  const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  const run = promisify(execFile)(
    'script',
    ['-qfec', [process.execPath, cli, ...args].map(quote).join(' '), '/dev/null'],
    { env: { ...process.env, COLUMNS: '160', ...env }, maxBuffer: 1 << 24 },
  );
  // What the user types, once the question is on the screen.
  if (input !== undefined)
    run.child.stdout!.on('data', (d: Buffer) => {
      if (String(d).includes('[y/N]')) run.child.stdin!.write(input);
    });
  const { stdout } = await run.catch((e: { stdout: string }) => e);
  return stdout;
}

describe('byteBar', () => {
  it('counts bytes, so the last update of a 25.7 MB load draws 100% (MB rounded drew 96%)', async () => {
    let out = '';
    const stream = Object.assign(
      new Writable({
        write(chunk, _enc, done) {
          out += String(chunk);
          done();
        },
      }),
      { isTTY: true, columns: 160 },
    );
    const bar = byteBar('loading |{bar}| {percentage}% {done}/{size}', stream);
    const total = 25_734_112;
    for (let done = 0; done < total; done += 8 << 20) bar.update(done, total);
    bar.update(total, total);
    bar.stop();
    const last = redraws(out).at(-1)!;
    expect(last).toMatch(/\| 100% 25\.7 MB\/25\.7 MB$/);
    // Not a terminal: nothing at all.
    let piped = '';
    const pipe = new Writable({
      write(chunk, _enc, done) {
        piped += String(chunk);
        done();
      },
    });
    const quiet = byteBar('{bar}', pipe);
    quiet.update(1, 2);
    quiet.stop();
    expect(piped).toBe('');
  });
});

describe.skipIf(!hasScript)('on a terminal', () => {
  let hub: FakeHub;
  beforeAll(async () => {
    const repo = tmpDir();
    cpSync(join(fixtures, 'tiny-b', 'hf'), repo, { recursive: true });
    mkdirSync(join(repo, 'original'));
    hub = await startFakeHub('tiny-org/tiny-b', repo);
  });
  afterAll(() => hub?.close());

  it('the weights load bar ends at 100% of the bytes', async () => {
    // tiny-a (2.5 MB): a bar in whole MB stopped at 2 of 3, 66%.
    const shown = redraws(await onTerminal(['generate', '--model', join(fixtures, 'tiny-a', 'hf'), 'hi']));
    const bars = shown.filter((l) => l.startsWith('loading weights'));
    expect(bars.length).toBeGreaterThan(0);
    expect(bars.at(-1)).toMatch(/\| 100% 2\.5 MB\/2\.5 MB /);
  }, 60_000);

  it('pull draws a bar that ends at 100%; pulling it again draws none and says it is cached', async () => {
    const env = { HF_HUB_CACHE: tmpDir('gptoss-cache-'), HF_ENDPOINT: hub.url };
    const first = redraws(await onTerminal(['pull', 'tiny-org/tiny-b'], env));
    const bars = first.filter((l) => l.includes('|'));
    expect(bars.length).toBeGreaterThan(0);
    expect(bars.at(-1)).toMatch(/\| 100% 0\.7 MB\/0\.7 MB /);
    expect(first.at(-1)).toMatch(
      /^tiny-org\/tiny-b: 4 files of the hf layout .*downloaded, 4 files; checksums verified\)$/,
    );
    const again = redraws(await onTerminal(['pull', 'tiny-org/tiny-b'], env));
    expect(again.filter((l) => l.includes('|') || /MB\/s/.test(l))).toEqual([]);
    expect(again.join('\n')).toMatch(/already in the cache, nothing downloaded/);
  }, 60_000);

  it('rm asks on a terminal, and deletes only on yes', async () => {
    const cache = tmpDir('gptoss-cache-');
    const env = { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url };
    await onTerminal(['pull', 'tiny-org/tiny-b'], env);
    const no = redraws(await onTerminal(['rm', 'tiny-org/tiny-b'], env, 'n\r'));
    expect(no.join('\n')).toMatch(/delete tiny-org\/tiny-b: every cached revision \([0-9a-f]{12}\), .*\? \[y\/N\]/);
    expect(no.at(-1)).toBe('nothing deleted');
    expect(existsSync(join(cache, 'models--tiny-org--tiny-b'))).toBe(true);
    const yes = redraws(await onTerminal(['rm', 'tiny-org/tiny-b'], env, 'y\r'));
    expect(yes.at(-1)).toMatch(/^deleted tiny-org\/tiny-b: every cached revision/);
    expect(existsSync(join(cache, 'models--tiny-org--tiny-b'))).toBe(false);
  }, 60_000);
});
