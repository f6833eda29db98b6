// `gptoss check`: parity of a backend with the official reference on the golden fixtures, as one
// plain command (the GPU machine has no test runner): every fixture and case, both checkpoint
// layouts, both precision modes, as one prefill, token by token, and a prefix then decode.
// Tolerances (test/fixtures/README.md): the float32 mode within 1e-3 of the reference's float32
// logits; the default mode within twice the reference's own bf16 error; decode within the same
// tolerance of prefill.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { InvalidArgumentError } from '../errors.js';
import type { Device, PrecisionMode } from '../backend/device.js';
import { loadModel } from '../engine/model.js';

interface Cases {
  vocab_size: number;
  cases: { name: string; tokens: number[]; logits_fp32: string; bf16_vs_fp32_rel_err: number }[];
}

export interface CheckResult {
  fixture: string;
  layout: 'original' | 'hf';
  mode: PrecisionMode;
  case: string;
  path: 'prefill' | 'decode' | 'prefix+decode' | 'decode vs prefill';
  relErr: number;
  tolerance: number;
  pass: boolean;
}

/** ||a - b|| / ||b|| over the whole array, in float64 (arrays of different lengths: an error). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length)
    throw new InvalidArgumentError(`logits of ${a.length} values against a reference of ${b.length}`);
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** A fixture, layout or case `check` did not run, and why. */
export interface CheckSkip {
  fixture: string;
  layout?: 'original' | 'hf';
  case?: string;
  why: string;
  /** A folder with none of a fixture's parts (test/fixtures also holds bench/ and harmony/ data). */
  notAFixture?: boolean;
}

/** Whether a cases.json is a model fixture's: cases with reference logits (harmony/ has another kind). */
function referenceCases(file: string): boolean {
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<Cases>;
    return Array.isArray(c.cases) && c.cases.some((x) => typeof x?.logits_fp32 === 'string');
  } catch {
    return true; // a fixture's cases.json that cannot be read is said when the fixture is run
  }
}

/**
 * The model fixtures under `dir` (a folder with cases.json and the checkpoint in original/, hf/ or
 * both) and what was passed over, with the reason, so a fixture is never left out unseen.
 */
export function findFixtures(dir: string): {
  fixtures: { name: string; layouts: ('original' | 'hf')[] }[];
  skipped: CheckSkip[];
} {
  const fixtures: { name: string; layouts: ('original' | 'hf')[] }[] = [];
  const skipped: CheckSkip[] = [];
  const folders = readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  for (const name of folders) {
    const has = (f: string) => existsSync(join(dir, name, f));
    const layouts = (['original', 'hf'] as const).filter((l) => has(l));
    if (layouts.length === 0 && !(has('cases.json') && referenceCases(join(dir, name, 'cases.json')))) {
      skipped.push({
        fixture: name,
        why: 'not a model fixture (no checkpoint in original/ or hf/, no reference logits)',
        notAFixture: true,
      });
      continue;
    }
    if (!has('cases.json')) {
      skipped.push({ fixture: name, why: 'no cases.json (the token sequences and reference logits to compare)' });
      continue;
    }
    if (layouts.length === 0) {
      skipped.push({ fixture: name, why: 'no checkpoint (neither original/ nor hf/)' });
      continue;
    }
    for (const l of ['original', 'hf'] as const)
      if (!layouts.includes(l))
        skipped.push({ fixture: name, layout: l, why: `no ${l}/ folder: only ${layouts[0]} is checked` });
    fixtures.push({ name, layouts });
  }
  return { fixtures, skipped };
}

export async function runCheck(o: {
  fixtures: string;
  device: Device;
  log?: (line: string) => void;
  /** Told of every fixture, layout or case passed over, with the reason. */
  onSkip?: (s: CheckSkip) => void;
}): Promise<CheckResult[]> {
  if (!existsSync(o.fixtures))
    throw new InvalidArgumentError(
      `no fixtures at ${o.fixtures}: pass --fixtures DIR, a folder of model fixtures (tiny-a and tiny-b are in test/fixtures of the package and of the repository)`,
    );
  const { fixtures, skipped } = findFixtures(o.fixtures);
  skipped.forEach((s) => o.onSkip?.(s));
  if (fixtures.length === 0)
    throw new InvalidArgumentError(
      `${o.fixtures} holds no model fixture (a folder with cases.json and original/ or hf/)${skipped.length ? `: ${skipped.map((s) => `${s.fixture}: ${s.why}`).join('; ')}` : ''}`,
    );
  const out: CheckResult[] = [];
  for (const { name: fixture, layouts } of fixtures) {
    let cases: Cases;
    try {
      cases = JSON.parse(readFileSync(join(o.fixtures, fixture, 'cases.json'), 'utf8')) as Cases;
      if (!Array.isArray(cases.cases)) throw new Error('it has no "cases" list');
    } catch (e) {
      o.onSkip?.({ fixture, why: `cases.json cannot be read: ${(e as Error).message}` });
      continue;
    }
    // A case whose reference logits are missing is said, not a crash halfway through.
    const runnable = cases.cases.filter((c) => {
      if (existsSync(join(o.fixtures, fixture, c.logits_fp32))) return true;
      o.onSkip?.({ fixture, case: c.name, why: `its reference logits ${c.logits_fp32} are missing` });
      return false;
    });
    if (runnable.length === 0) continue;
    for (const layout of layouts)
      for (const mode of ['fp32', 'default'] as const) {
        o.log?.(`${fixture} ${layout} ${mode}...`);
        const model = await loadModel(join(o.fixtures, fixture, layout), { mode, device: o.device });
        try {
          const V = model.config.vocabSize;
          for (const c of runnable) {
            const ref = new Float32Array(readFileSync(join(o.fixtures, fixture, c.logits_fp32)).buffer.slice(0));
            const tolerance = mode === 'fp32' ? 1e-3 : 2 * c.bf16_vs_fp32_rel_err;
            const add = (path: CheckResult['path'], err: number) =>
              out.push({ fixture, layout, mode, case: c.name, path, relErr: err, tolerance, pass: err <= tolerance });
            const s = model.createSession({ maxContext: c.tokens.length + 1 });
            try {
              const prefill = await s.forward(c.tokens);
              add('prefill', relErr(prefill, ref));
              s.reset();
              const decode = new Float32Array(c.tokens.length * V);
              for (let i = 0; i < c.tokens.length; i++)
                decode.set(await s.forward([c.tokens[i]], { logits: 'last' }), i * V);
              add('decode', relErr(decode, ref));
              add('decode vs prefill', relErr(decode, prefill));
              s.reset();
              const split = Math.ceil(c.tokens.length / 2);
              const mixed = new Float32Array(c.tokens.length * V);
              mixed.set(await s.forward(c.tokens.slice(0, split)));
              for (let i = split; i < c.tokens.length; i++)
                mixed.set(await s.forward([c.tokens[i]], { logits: 'last' }), i * V);
              add('prefix+decode', relErr(mixed, ref));
            } finally {
              s.dispose();
            }
          }
        } finally {
          model.dispose();
        }
      }
  }
  return out;
}

/** One line for a fixture, layout or case `check` passed over. */
export const formatSkip = (s: CheckSkip): string =>
  `skipped ${[s.fixture, s.layout, s.case].filter(Boolean).join(' ')}: ${s.why}`;

/** The lines saying what was not checked: each skip, then the folders that are no fixture at all. */
function skipLines(skipped: CheckSkip[]): string[] {
  const others = skipped.filter((s) => s.notAFixture).map((s) => s.fixture);
  return [
    ...skipped.filter((s) => !s.notAFixture).map(formatSkip),
    ...(others.length
      ? [`not model fixtures (no checkpoint, no reference logits), not checked: ${others.join(', ')}`]
      : []),
  ];
}

export function formatCheck(rs: CheckResult[], device: Device, skipped: CheckSkip[] = []): string {
  const head = ['fixture', 'layout', 'mode', 'case', 'path', 'rel. error', 'tolerance', ''];
  const rows = rs.map((r) => [
    r.fixture,
    r.layout,
    r.mode,
    r.case,
    r.path,
    r.relErr.toExponential(2),
    r.tolerance.toExponential(2),
    r.pass ? 'ok' : 'FAIL',
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const failed = rs.filter((r) => !r.pass).length;
  const real = skipped.filter((s) => !s.notAFixture).length;
  return [
    ...[head, ...rows].map((row) =>
      row
        .map((c, i) => c.padEnd(w[i]))
        .join('  ')
        .trimEnd(),
    ),
    '',
    ...(skipped.length ? ['', ...skipLines(skipped)] : []),
    '',
    `${device}: ${rs.length - failed} of ${rs.length} checks within tolerance${failed ? `; ${failed} FAILED` : ''}${real ? `; ${real} skipped (above)` : ''}`,
  ].join('\n');
}
