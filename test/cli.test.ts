// The gptoss command as users run it (dist/cli/main.js, built by `npm test`'s tsc step).
import { execFile } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { copyFixture, fixtures, relErr, tmpDir } from './helpers/checkpoint.js';

const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
const run = promisify(execFile);

async function gptoss(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], {
      env: { ...process.env, ...env },
      maxBuffer: 1 << 26,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const cases = JSON.parse(readFileSync(join(fixtures, 'tiny-a', 'cases.json'), 'utf8')) as {
  cases: { name: string; tokens: number[]; logits_fp32: string }[];
};
const seq7 = cases.cases.find((c) => c.name === 'seq7')!;
const ref = new Float32Array(readFileSync(join(fixtures, 'tiny-a', seq7.logits_fp32)).buffer.slice(0));
const readF32 = (f: string) => new Float32Array(readFileSync(f).buffer.slice(0));

async function logits(extra: string[], env: Record<string, string> = {}) {
  const out = join(tmpDir(), 'logits.f32');
  const r = await gptoss(
    ['logits', '--model', join(fixtures, 'tiny-a', 'hf'), '--tokens', seq7.tokens.join(','), '--out', out, ...extra],
    env,
  );
  expect(r.stderr).toContain('wrote 7x1000 float32 logits');
  expect(r.code).toBe(0);
  return readF32(out);
}

describe('gptoss logits', () => {
  it('writes [tokens, vocab] float32 logits that match the reference', async () => {
    expect(relErr(await logits(['--mode', 'fp32']), ref)).toBeLessThan(1e-4);
  });

  it('--decode feeds the tokens one at a time with the same result', async () => {
    const [a, b] = await Promise.all([logits(['--mode', 'fp32']), logits(['--mode', 'fp32', '--decode'])]);
    expect(relErr(b, a)).toBeLessThan(1e-5);
  });

  it('every SIMD variant (portable, AVX2, AVX-512 where the CPU has them) matches the reference', async () => {
    for (const simd of ['generic', 'avx2', 'avx512'])
      expect(relErr(await logits(['--mode', 'fp32'], { GPTOSS_SIMD: simd }), ref)).toBeLessThan(1e-4);
  });

  it('results do not depend on the thread count', async () => {
    const [one, many] = await Promise.all([logits([], { GPTOSS_THREADS: '1' }), logits([], { GPTOSS_THREADS: '3' })]);
    expect(Buffer.from(one.buffer).equals(Buffer.from(many.buffer))).toBe(true);
  });

  it('a bad checkpoint exits 1 with the error code and the path', async () => {
    const dir = tmpDir();
    const r = await gptoss(['logits', '--model', dir, '--tokens', '1', '--out', join(dir, 'x')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERR_BAD_CHECKPOINT');
    expect(r.stderr).toContain(dir);
  });

  it('bad arguments exit 2 and say which', async () => {
    const r = await gptoss(['logits', '--model', 'x', '--tokens', '1,a', '--out', 'y']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('"a" is not a non-negative integer');
    const r2 = await gptoss([
      'logits',
      '--model',
      join(fixtures, 'tiny-a', 'hf'),
      '--tokens',
      '5000',
      '--out',
      join(tmpDir(), 'x'),
    ]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('ERR_INVALID_ARGUMENT');
  });

  it('--device cuda without a usable GPU backend fails with a typed error', async () => {
    const r = await gptoss([
      'logits',
      '--model',
      join(fixtures, 'tiny-a', 'hf'),
      '--tokens',
      '1',
      '--out',
      join(tmpDir(), 'x'),
      '--device',
      'cuda',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERR_(UNSUPPORTED|DEVICE)/);
  });
});

describe('errors of the operating system and of settings', () => {
  // One `gptoss: ...` line naming the cause, no stack trace, and before any expensive work.
  const oneLine = (stderr: string) => {
    expect(stderr).not.toMatch(/^\s+at /m);
    return stderr.trim();
  };

  it('an --out that cannot be written is said before the logits are computed', async () => {
    const r = await gptoss(['logits', '--model', '/no/such/model', '--tokens', '1', '--out', '/nonexistent/dir/x.f32']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toBe('gptoss: --out /nonexistent/dir/x.f32: the folder /nonexistent/dir does not exist'); // the model was never opened
  });

  it('serve: a port in use, a port out of range or an address not ours is said before the model loads', async () => {
    const { createServer } = await import('node:net');
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    try {
      const inUse = await gptoss(['serve', '--model', '/no/such/model', '--port', String(port)]);
      expect(inUse.code).toBe(2);
      expect(oneLine(inUse.stderr)).toBe(`gptoss: --port ${port}: the port is in use on 127.0.0.1`);
    } finally {
      busy.close();
    }
    const range = await gptoss(['serve', '--model', '/no/such/model', '--port', '99999']);
    expect(range.code).not.toBe(0);
    expect(range.stderr).toContain('--port must be an integer in [0, 65535]');
    const host = await gptoss(['serve', '--model', '/no/such/model', '--host', '192.0.2.1', '--port', '0']);
    expect(host.code).toBe(2);
    expect(oneLine(host.stderr)).toBe('gptoss: --host 192.0.2.1: not an address of this machine');
  });

  it('any other OS error is one line with its cause (bench report --out naming a file)', async () => {
    const run = join(fixtures, '..', '..', 'benchmarks', 'results', '2026-11-30-cpu-decode-moe.json');
    const file = join(tmpDir(), 'taken');
    writeFileSync(file, 'x');
    const r = await gptoss(['bench', 'report', run, '--out', file]);
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/^gptoss: E[A-Z]+: .*taken/);
  });

  it('GPTOSS_THREADS and GPTOSS_SIMD are checked like flags', async () => {
    const args = ['logits', '--model', join(fixtures, 'tiny-a', 'hf'), '--tokens', '1', '--out', join(tmpDir(), 'x')];
    for (const [env, why] of [
      [{ GPTOSS_THREADS: 'abc' }, 'GPTOSS_THREADS must be an integer in [1, 1024], got "abc"'],
      [{ GPTOSS_THREADS: '0' }, 'GPTOSS_THREADS must be an integer in [1, 1024], got "0"'],
      [{ GPTOSS_THREADS: '1000000' }, 'GPTOSS_THREADS must be an integer in [1, 1024], got "1000000"'],
      [{ GPTOSS_SIMD: 'bogus' }, 'GPTOSS_SIMD must be one of avx512, avx2, generic, got "bogus"'],
    ] as const) {
      const r = await gptoss([...args], env);
      expect(r.code, JSON.stringify(env)).toBe(1);
      expect(oneLine(r.stderr)).toBe(`gptoss: ERR_INVALID_ARGUMENT: ${why}`);
    }
  });

  it('--version, and a mistyped bench command named as such', async () => {
    const v = await gptoss(['--version']);
    expect(v.stdout.trim()).toBe(
      (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version,
    );
    const b = await gptoss(['bench', 'foo']);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain('unknown bench command "foo"; one of: suite, kernels');
  });
});

describe('gptoss check', () => {
  it('checks every fixture, layout, mode and path against the reference and passes on the CPU', async () => {
    const r = await gptoss(['check', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const { results } = JSON.parse(r.stdout.trim()) as { results: { fixture: string; path: string; pass: boolean }[] };
    // 2 fixtures x 2 cases x 2 layouts x 2 modes x 4 paths
    expect(results).toHaveLength(64);
    expect(new Set(results.map((x) => x.path))).toEqual(
      new Set(['prefill', 'decode', 'decode vs prefill', 'prefix+decode']),
    );
    expect(results.every((x) => x.pass)).toBe(true);
  });

  it('fails with exit code 1 and names the cases when the logits do not match', async () => {
    const dir = copyFixture('tiny-b');
    const fx = join(dir, '..', `fx-${Date.now()}`);
    cpSync(dir, join(fx, 'tiny-b'), { recursive: true });
    // A reference 1% off: beyond the float32 mode's 1e-3, within the default mode's bf16 bound.
    const f = join(fx, 'tiny-b', 'seq3.fp32.f32');
    writeFileSync(f, Buffer.from(readF32(f).map((x) => x * 1.01).buffer));
    const r = await gptoss(['check', '--fixtures', fx]);
    expect(r.code).toBe(1);
    // seq3 against the reference in the float32 mode: 3 paths x 2 layouts (decode vs prefill still agree).
    expect(r.stdout).toMatch(/cpu: 26 of 32 checks within tolerance; 6 FAILED/);
    const failed = r.stdout.split('\n').filter((l) => l.endsWith('FAIL'));
    expect(failed).toHaveLength(6);
    for (const l of failed)
      expect(l).toMatch(/^tiny-b\s+(original|hf)\s+fp32\s+seq3\s+(prefill|decode|prefix\+decode)\s/);
  });
});

describe('gptoss bench', () => {
  it('runs a synthetic gpt-oss-20b layer and prints a table and one JSON line with the bandwidth ratio', async () => {
    const r = await gptoss([
      'bench',
      '--synthetic',
      '20b',
      '--layers',
      '1',
      '--prefill-tokens',
      '8',
      '--decode-tokens',
      '3',
    ]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const json = JSON.parse(lines[lines.length - 1]);
    expect(json.model).toBe('synthetic-20b (1 layers)');
    expect(json.ceiling.hostReadGBps).toBeGreaterThan(0);
    // 1.158 GB of unembedding + one layer's attention (53 MB) and 4 of its experts (53 MB)
    expect(json.decode.bytesPerToken).toBeGreaterThan(1.158e9 + 1e8);
    expect(json.decode.bytesPerToken).toBeLessThan(1.158e9 + 1.2e8);
    expect(json.decode.ratioToHostRead).toBeGreaterThan(0);
    expect(json.fingerprint).toHaveProperty('commit');
    expect(r.stdout).toContain('ratio to host read bandwidth');
  });

  it('a synthetic model the available RAM cannot hold is refused before it is built, with the figures', async () => {
    // os.freemem() (MemAvailable) made to say 2 GB.
    const preload = join(tmpDir(), 'low-memory.mjs');
    writeFileSync(
      preload,
      "import os from 'node:os'; import { syncBuiltinESMExports } from 'node:module'; os.freemem = () => 2e9; syncBuiltinESMExports();\n",
    );
    const r = await run(process.execPath, ['--import', preload, cli, 'bench', '--synthetic', '20b']).then(
      (x) => ({ code: 0, ...x }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toMatch(
      /^gptoss: ERR_OUT_OF_MEMORY: the synthetic gpt-oss-20b with 2 layers needs about 4\.\d\d GB of RAM \(weights, KV cache and activations, and 1\.07 GB for the bandwidth probe\); this host has 2\.00 GB available \(of [\d.]+ GB\); --layers 1 needs 3\.\d\d GB$/,
    );
  });

  it('bench decode writes a result file the report accepts, with the ceilings of the same run; bad grids exit 2', async () => {
    const dir = tmpDir();
    const out = join(dir, 'run.json');
    const r = await gptoss([
      'bench',
      'decode',
      '--synthetic',
      '20b',
      '--layers',
      '1',
      '--batch',
      '1,2',
      '--context',
      '0,64',
      '--steps',
      '2',
      '--out',
      out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/decode batch\s+context\s+tokens\/s/);
    const { validateRun } = await import('../lib/bench/run.js');
    const run = validateRun(JSON.parse(readFileSync(out, 'utf8')), out);
    expect(run.model).toBe('synthetic-20b (1 layers)');
    expect(run.ceilings!.readGBps.value).toBeGreaterThan(0);
    expect(run.decode!.points.map((p) => [p.batch, p.context])).toEqual([
      [1, 0],
      [2, 0],
      [1, 64],
      [2, 64],
    ]);
    expect(run.kernels).toBeUndefined();
    const bad = await gptoss(['bench', 'decode', '--batch', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--batch sizes must be at least 1/);
  });

  it('bench mask: the constraint masks over a JSON document against decode steps at each batch size', async () => {
    const r = await gptoss(['bench', 'mask', '--layers', '1', '--batch', '1,3', '--steps', '2', '--json']);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout.trim());
    expect(json.bench).toBe('mask');
    expect(json.documentTokens).toBeGreaterThan(100);
    expect(json.rows.map((x: { batch: number }) => x.batch)).toEqual([1, 3]);
    for (const row of json.rows) {
      expect(row.stepMs).toBeGreaterThan(0);
      expect(row.maskMsPerStep).toBeGreaterThan(0);
      expect(row.ratioToStep).toBeCloseTo(row.maskMsPerStep / row.stepMs, 9);
    }
  });
});
