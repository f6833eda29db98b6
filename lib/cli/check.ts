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

export async function runCheck(o: {
  fixtures: string;
  device: Device;
  log?: (line: string) => void;
}): Promise<CheckResult[]> {
  if (!existsSync(o.fixtures))
    throw new InvalidArgumentError(
      `no fixtures at ${o.fixtures} (pass --fixtures DIR: the test/fixtures folder of the repository)`,
    );
  // A model fixture: cases with logits, and the checkpoint in both layouts.
  const names = readdirSync(o.fixtures)
    .filter((d) => ['cases.json', 'original', 'hf'].every((f) => existsSync(join(o.fixtures, d, f))))
    .sort();
  if (names.length === 0)
    throw new InvalidArgumentError(
      `${o.fixtures} holds no model fixture (a folder with cases.json, original/ and hf/)`,
    );
  const out: CheckResult[] = [];
  for (const fixture of names) {
    const cases = JSON.parse(readFileSync(join(o.fixtures, fixture, 'cases.json'), 'utf8')) as Cases;
    for (const layout of ['original', 'hf'] as const)
      for (const mode of ['fp32', 'default'] as const) {
        o.log?.(`${fixture} ${layout} ${mode}...`);
        const model = await loadModel(join(o.fixtures, fixture, layout), { mode, device: o.device });
        try {
          const V = model.config.vocabSize;
          for (const c of cases.cases) {
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

export function formatCheck(rs: CheckResult[], device: Device): string {
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
  return [
    ...[head, ...rows].map((row) =>
      row
        .map((c, i) => c.padEnd(w[i]))
        .join('  ')
        .trimEnd(),
    ),
    '',
    `${device}: ${rs.length - failed} of ${rs.length} checks within tolerance${failed ? `; ${failed} FAILED` : ''}`,
  ].join('\n');
}
