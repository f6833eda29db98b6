// `gptoss check` as an installed copy runs it: its default fixtures come with the package and are
// found from any working directory, and a fixture, layout or case it passes over is said.
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { findFixtures } from '../lib/cli/check.js';
import { fixtures, tmpDir } from './helpers/checkpoint.js';

const cli = new URL('../dist/cli/main.js', import.meta.url).pathname;
const root = new URL('..', import.meta.url).pathname;
const run = promisify(execFile);

async function gptoss(args: string[], cwd?: string) {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { cwd, maxBuffer: 1 << 26 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('gptoss check', () => {
  it('the published package carries every file check reads in its default fixtures', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: root,
      maxBuffer: 1 << 26,
    });
    const [pack] = JSON.parse(stdout) as { files: { path: string }[]; unpackedSize: number }[];
    const shipped = new Set(pack.files.map((f) => f.path));
    const { fixtures: found } = findFixtures(fixtures);
    expect(found.map((f) => f.name)).toEqual(['tiny-a', 'tiny-b']);
    for (const { name, layouts } of found) {
      const cases = JSON.parse(readFileSync(join(fixtures, name, 'cases.json'), 'utf8')) as {
        cases: { logits_fp32: string }[];
      };
      expect(layouts).toEqual(['original', 'hf']);
      const needed = [
        'cases.json',
        ...cases.cases.map((c) => c.logits_fp32),
        ...layouts.flatMap((l) => readdirSync(join(fixtures, name, l)).map((f) => `${l}/${f}`)),
      ];
      for (const f of needed) expect(shipped, `${name}/${f}`).toContain(`test/fixtures/${name}/${f}`);
    }
    // Small enough to ship: the fixtures add about 8 MB unpacked.
    expect(pack.unpackedSize).toBeLessThan(20e6);
  }, 60_000);

  it('finds the package fixtures from any working directory', async () => {
    const r = await gptoss(['check', '--json'], tmpDir());
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim()) as {
      results: { fixture: string; pass: boolean }[];
      skipped: { fixture: string; notAFixture?: boolean }[];
    };
    expect(new Set(out.results.map((x) => x.fixture))).toEqual(new Set(['tiny-a', 'tiny-b']));
    expect(out.results.every((x) => x.pass)).toBe(true);
    // The other folders of test/fixtures are named as what they are, not fixtures skipped.
    expect(out.skipped.every((s) => s.notAFixture)).toBe(true);
  }, 120_000);

  it('--fixtures DIR says which fixture, layout or case it skipped, and why', async () => {
    const fx = tmpDir();
    // tiny-b with only the Hugging Face layout; seq40's reference logits gone.
    mkdirSync(join(fx, 'tiny-b'));
    for (const f of ['cases.json', 'hf', 'seq3.fp32.f32'])
      cpSync(join(fixtures, 'tiny-b', f), join(fx, 'tiny-b', f), { recursive: true });
    // A checkpoint without cases, and a folder that is no fixture at all.
    cpSync(join(fixtures, 'tiny-a', 'original'), join(fx, 'no-cases', 'original'), { recursive: true });
    mkdirSync(join(fx, 'notes'));
    const r = await gptoss(['check', '--fixtures', fx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('skipped no-cases: no cases.json');
    expect(r.stdout).toContain('skipped tiny-b original: no original/ folder: only hf is checked');
    expect(r.stdout).toContain('skipped tiny-b seq40: its reference logits seq40.fp32.f32 are missing');
    expect(r.stdout).toContain('not model fixtures (no checkpoint, no reference logits), not checked: notes');
    // tiny-b seq3, hf only, 2 modes x 4 paths.
    expect(r.stdout).toMatch(/cpu: 8 of 8 checks within tolerance; 3 skipped \(above\)/);
    const json = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { skipped: { fixture: string; why: string }[] };
    expect(json.skipped.map((s) => s.fixture).sort()).toEqual(['no-cases', 'notes', 'tiny-b', 'tiny-b']);

    // Nothing runnable at all: an error that says what each folder lacks.
    rmSync(join(fx, 'tiny-b'), { recursive: true });
    const none = await gptoss(['check', '--fixtures', fx]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/holds no model fixture .*no-cases: no cases\.json/);
  }, 120_000);
});
