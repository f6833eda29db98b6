#!/usr/bin/env node
// Per-kernel counts of what the SASS must and must not show, from `cuobjdump -sass` output:
// LDG.E.128 (16-byte global loads), HMMA (tensor-core mma), LDL and STL (local memory: spills or
// stack arrays). benchmarks/gpu.sh runs it on the GPU machine where cuobjdump is:
//   cuobjdump -sass build-cuda-native/cuda_tests > sass.txt; node test/cuda/sass-counts.mjs sass.txt
// Prints one Markdown row per kernel and architecture (names demangled by c++filt when present).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const PATTERNS = {
  'LDG.E.128': /(^|\s)LDG\.E\.128\b/,
  HMMA: /(^|\s)HMMA\b/,
  LDL: /(^|\s)LDL\b/,
  STL: /(^|\s)STL\b/,
};

// [{ arch, kernel (mangled), counts: { 'LDG.E.128': n, HMMA: n, LDL: n, STL: n } }]
export function sassCounts(text) {
  const rows = [];
  let arch = '?',
    cur = null;
  for (const line of text.split('\n')) {
    const a = line.match(/code for (sm_\d+a?)/);
    if (a) arch = a[1];
    const f = line.match(/Function : (\S+)/);
    if (f) {
      cur = { arch, kernel: f[1], counts: Object.fromEntries(Object.keys(PATTERNS).map((k) => [k, 0])) };
      rows.push(cur);
      continue;
    }
    if (!cur || !/\/\*[0-9a-f]+\*\//.test(line)) continue;
    const ins = line.replace(/^\s*\/\*[0-9a-f]+\*\/\s*/, '');
    for (const [k, re] of Object.entries(PATTERNS)) if (re.test(ins)) cur.counts[k]++;
  }
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rows = sassCounts(readFileSync(process.argv[2] ?? 0, 'utf8'));
  const filt = spawnSync('c++filt', [], { input: rows.map((r) => r.kernel).join('\n'), encoding: 'utf8' });
  const names = filt.status === 0 ? filt.stdout.split('\n') : rows.map((r) => r.kernel);
  console.log(`| kernel | arch | ${Object.keys(PATTERNS).join(' | ')} |`);
  console.log(
    `|---|---|${Object.keys(PATTERNS)
      .map(() => '---|')
      .join('')}`,
  );
  rows.forEach((r, i) =>
    console.log(`| ${names[i] || r.kernel} | ${r.arch} | ${Object.values(r.counts).join(' | ')} |`),
  );
  const local = rows.filter((r) => r.counts.LDL + r.counts.STL > 0).length;
  console.log(`\n${rows.length} kernels; ${local} with local memory (LDL/STL)`);
}
