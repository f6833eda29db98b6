// `gptoss serve` as users run it (dist/cli/main.js): what it says while loading and the model id it
// serves, a log line per request on stderr, and Ctrl-C: the first drains (a stream in flight ends
// properly, new requests get 503), past --drain-timeout what is left is cut with its stream ended,
// and a second Ctrl-C cuts at once.
import { type ChildProcess, spawn } from 'node:child_process';
import { basename } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { tinyRealVocabCheckpoint } from './helpers/checkpoint.js';

const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
let dir: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  dir = tinyRealVocabCheckpoint(21);
});
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

async function serve(args: string[] = []) {
  const child = spawn(process.execPath, [cli, 'serve', '--model', dir, '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  const waiters: [RegExp, (m: RegExpExecArray) => void][] = [];
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of [...waiters]) {
      const m = w[0].exec(stderr);
      if (m) (waiters.splice(waiters.indexOf(w), 1), w[1](m));
    }
  });
  // 'close', not 'exit': stderr has then been read to its end.
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  /** Resolves once stderr matches `re`. */
  const said = (re: RegExp) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const m = re.exec(stderr);
      if (m) return resolve(m);
      waiters.push([re, resolve]);
      void exited.then(() => reject(new Error(`exited without ${re}: ${stderr}`)));
    });
  const url = (await said(/serving \S+ at (http:\/\/\S+)\/v1/))[1];
  return { child, url, said, exited, stderr: () => stderr };
}

/** A completions stream whose first event has come; `rest` is all its text once it ends. */
async function stream(url: string, maxTokens: number) {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: basename(dir), prompt: [1, 2, 3], max_tokens: maxTokens, stream: true }),
  });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = dec.decode((await reader.read()).value);
  const rest = (async () => {
    try {
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += dec.decode(r.value, { stream: true });
    } catch {
      // cut: the text so far
    }
    return text;
  })();
  return { rest };
}

const finishReasons = (sse: string) =>
  sse
    .split('\n\n')
    .filter((b) => b.startsWith('data: {'))
    .map((b) => (JSON.parse(b.slice(6)) as { choices: { finish_reason: string | null }[] }).choices[0].finish_reason)
    .filter((r) => r !== null);

describe('gptoss serve', () => {
  it('says it is loading, serves the directory name as the model id, logs each request as a JSON line, and the first Ctrl-C drains', async () => {
    const s = await serve();
    const name = basename(dir);
    expect(s.stderr()).toMatch(new RegExp(`^loaded ${name} in \\d+\\.\\d s\\nserving ${name} at http`, 'm'));
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toEqual([name]);

    const st = await stream(s.url, 1000);
    s.child.kill('SIGINT');
    await s.said(/stopping: no new requests; those in flight may finish for 30 s \(Ctrl-C again cuts them\)/);
    const late = await fetch(`${s.url}/health`);
    expect(late.status).toBe(503);
    const sse = await st.rest;
    expect(finishReasons(sse)).toEqual(['length']);
    expect(sse.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(await s.exited).toBe(0);
    expect(s.stderr()).toContain('stopped: 1 request(s) finished\n');

    const log = s
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(log.map(({ method, route, status }) => ({ method, route, status }))).toEqual([
      { method: 'GET', route: '/v1/models', status: 200 },
      { method: 'GET', route: '/health', status: 503 },
      { method: 'POST', route: '/v1/completions', status: 200 }, // logged when the stream has ended
    ]);
    expect(log[2]).toMatchObject({ level: 30, msg: 'request', tokensIn: 3, tokensOut: 1000 });
    expect(log[2].ms).toBeGreaterThan(0);
  });

  it('past --drain-timeout a stream is cut but ended (finish_reason, [DONE]); --quiet logs no requests', async () => {
    const s = await serve(['--drain-timeout', '0.3', '--quiet']);
    const st = await stream(s.url, 3000);
    s.child.kill('SIGINT');
    const sse = await st.rest;
    expect(finishReasons(sse)).toEqual(['length']);
    expect(sse.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(sse.split('\n\n').filter((b) => b.startsWith('data: {')).length - 1).toBeLessThan(3000);
    expect(await s.exited).toBe(0);
    expect(s.stderr()).toContain('stopped: 0 request(s) finished, 1 cut at the 0.3 s deadline\n');
    expect(s.stderr()).not.toMatch(/^\{/m);
  });

  it('a second Ctrl-C cuts at once', async () => {
    const s = await serve(['--drain-timeout', '600']);
    const st = await stream(s.url, 3000);
    s.child.kill('SIGINT');
    await s.said(/stopping: no new requests/);
    s.child.kill('SIGINT');
    expect(await s.exited).toBe(130);
    expect(s.stderr()).toContain('stopping now: requests in flight cut\n');
    const sse = await st.rest;
    expect(sse).not.toContain('[DONE]');
  });

  it('--drain-timeout must be a number of seconds', async () => {
    const child = spawn(process.execPath, [cli, 'serve', '--model', dir, '--drain-timeout', 'soon'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code).not.toBe(0);
    expect(err).toContain('--drain-timeout must be a number of seconds, 0 or more');
  });
});
