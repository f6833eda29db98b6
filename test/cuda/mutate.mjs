#!/usr/bin/env node
// npm run cuda:mutate: evidence that the kernel tests see synchronisation bugs. For every kernel
// source in kernels/cuda/ (.cu and .cuh), each mutant deletes one __syncthreads() or __syncwarp()
// or changes one shuffle's lane/offset argument, is built against the emulator (no sanitizers, for
// speed) and runs the kernel-lab tests; a mutant is killed when they fail. Exits 1 if any mutant
// survives. A barrier whose line says `// mutate: beyond the emulator (...)` is listed with that
// reason and not mutated: the emulator treats every warp collective as a memory fence, so a
// __syncwarp that orders shared stores before a ballot cannot fail there. (One that orders a
// warp's global stores before its lane 0's ticket can: the tickets schedule interleaves blocks.)
// Works on a copy in build-cuda-emu/mutants/: kernels/cuda/ is never written. Offsets of
// xor/up/down shuffles become (E) >> 1 and (E) << 1, source lanes of __shfl_sync (E) + 1 and (E) ^ 1. Not (E) + 1 for xor: a butterfly over the masks 17, 9, 5, 3, 2
// still adds all 32 lanes (any five independent xor masks do), so that mutant is no bug.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const base = join('build-cuda-emu', 'mutants');
const srcRoot = join(base, 'src');
const kdir = join(srcRoot, 'kernels', 'cuda');
rmSync(join(root, srcRoot), { recursive: true, force: true });
mkdirSync(join(root, kdir), { recursive: true });
cpSync(join(root, 'kernels/cuda'), join(root, kdir), { recursive: true });
const cxx = spawnSync('sh', ['-c', 'command -v clang++']).status === 0 ? 'clang++' : 'g++';
const jobs = String(Math.max(1, Number(spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()) || 2));

function build() {
  const r = spawnSync(
    'make',
    [
      '-s',
      `-j${jobs}`,
      '-f',
      'test/cuda/Makefile',
      `LAB_CXX=${cxx}`,
      `OUT=${join(base, 'out')}`,
      `KDIR=${kdir}`,
      `EXTRA_INC=-I${srcRoot}`,
      'SAN=',
      'OPT=-O1',
    ],
    { cwd: root, encoding: 'utf8' },
  );
  return r.status === 0 ? null : r.stderr.slice(-1500);
}
// A mutant of kernels/cuda/<op>.cu(h) runs the tests named "<op>: ..." (all of them for files no
// test is named after, and for the unmutated build), with LAB_QUICK set: real-shape cases skipped.
function runTests(filter = '') {
  const r = spawnSync('timeout', ['120', join(base, 'out', 'cuda_tests'), filter], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, LAB_QUICK: '1' },
  });
  const firstFail = (r.stdout.match(/FAIL .*\n.*\n/) ?? [''])[0].trim().replace(/\s+/g, ' ');
  return { ok: r.status === 0, firstFail };
}

// Finds the end of a call's argument list starting after '(' at i; returns the argument spans.
function args(text, i) {
  const spans = [];
  let depth = 0,
    start = i;
  for (let j = i; j < text.length; j++) {
    const c = text[j];
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      if (depth === 0) {
        spans.push([start, j]);
        return spans;
      }
      depth--;
    } else if (c === ',' && depth === 0) {
      spans.push([start, j]);
      start = j + 1;
    }
  }
  return spans;
}

const mutants = [];
const notRun = [];
// node test/cuda/mutate.mjs [file...]: only the mutants of those files of kernels/cuda/.
const only = process.argv.slice(2);
// A name that is not a file of kernels/cuda/ (a path, a typo) would select no mutants and pass.
const unknown = only.filter((f) => !existsSync(join(root, 'kernels/cuda', f)) || f.includes('/'));
if (unknown.length) {
  console.error(`cuda:mutate: not a file of kernels/cuda/ (give bare names, e.g. sample.cu): ${unknown.join(', ')}`);
  process.exit(2);
}
for (const file of readdirSync(join(root, 'kernels/cuda'))
  .filter((f) => /\.(cu|cuh)$/.test(f) && (!only.length || only.includes(f)))
  .sort()) {
  const text = readFileSync(join(root, 'kernels/cuda', file), 'utf8');
  const lineOf = (i) => text.slice(0, i).split('\n').length;
  const inComment = (i) => /\/\//.test(text.slice(text.lastIndexOf('\n', i) + 1, i));
  for (const m of text.matchAll(/__sync(threads|warp)\(\);/g)) {
    if (inComment(m.index)) continue;
    const rest = text.slice(m.index, text.indexOf('\n', m.index));
    const beyond = rest.match(/\/\/ mutate: beyond the emulator \(([^)]*)\)/);
    if (beyond) {
      notRun.push(`not run   kernels/cuda/${file}:${lineOf(m.index)}  delete __sync${m[1]}(): ${beyond[1]}`);
      continue;
    }
    mutants.push({
      file,
      line: lineOf(m.index),
      what: `delete __sync${m[1]}()`,
      text: text.slice(0, m.index) + text.slice(m.index + m[0].length),
    });
  }
  for (const m of text.matchAll(/__shfl(_xor|_up|_down)?_sync\(/g)) {
    if (inComment(m.index)) continue;
    const a = args(text, m.index + m[0].length);
    if (a.length < 3) continue;
    const [s, e] = a[2];
    const arg = text.slice(s, e).trim();
    const repls = m[1] ? [`(${arg}) >> 1`, `(${arg}) << 1`] : [`(${arg}) + 1`, `(${arg}) ^ 1`];
    for (const repl of repls)
      mutants.push({
        file,
        line: lineOf(m.index),
        what: `${m[0].slice(0, -1)} offset ${arg} -> ${repl}`,
        text: text.slice(0, s) + ' ' + repl + text.slice(e),
      });
  }
}

const testSources = readdirSync(join(root, 'test/cuda'))
  .filter((f) => f.endsWith('_test.cu'))
  .map((f) => readFileSync(join(root, 'test/cuda', f), 'utf8'))
  .join('\n');
const t0 = Date.now();
const baseErr = build();
if (baseErr) {
  console.error(`cuda:mutate: the unmutated kernels do not build:\n${baseErr}`);
  process.exit(1);
}
const filterOf = (file) => {
  const op = file.replace(/\.(cu|cuh)$/, '');
  return testSources.includes(`LAB_TEST("${op}: `) ? `${op}:` : '';
};
const baseFilters = only.length ? [...new Set(only.map(filterOf))] : [''];
if (!baseFilters.every((f) => runTests(f).ok)) {
  console.error('cuda:mutate: the unmutated kernels fail their tests');
  process.exit(1);
}
for (const line of notRun) console.log(line);
let survived = 0;
for (const m of mutants) {
  const path = join(root, kdir, m.file);
  const original = readFileSync(path, 'utf8');
  writeFileSync(path, m.text);
  const err = build();
  const r = err ? { ok: false, firstFail: 'did not compile' } : runTests(filterOf(m.file));
  writeFileSync(path, original);
  if (r.ok) survived++;
  console.log(
    `${r.ok ? 'SURVIVED' : 'killed  '}  kernels/cuda/${m.file}:${m.line}  ${m.what}${r.ok ? '' : `  (${r.firstFail.slice(0, 160)})`}`,
  );
}
build();
console.log(
  `cuda:mutate: ${mutants.length - survived} of ${mutants.length} mutants killed in ${((Date.now() - t0) / 1000).toFixed(0)} s` +
    (notRun.length ? `; ${notRun.length} marked barrier(s) beyond the emulator not mutated` : ''),
);
process.exit(survived ? 1 : 0);
