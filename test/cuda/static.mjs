#!/usr/bin/env node
// npm run cuda:static: static checks of the real nvcc build of every kernel in kernels/cuda/, for
// sm_80 and sm_90, and a static roofline per kernel launch for an H100 SXM and an A100 (a
// PREDICTION, never a measurement).
//   - ptxas (-Xptxas -v,--warn-on-spills,--warn-on-local-memory-usage): registers, spill bytes,
//     stack frame, static shared memory, barriers, per kernel and architecture, and whether it
//     serialized a kernel's wgmma (its "Potential Performance Loss" remark: a failure);
//   - occupancy from those figures with NVIDIA's header-only cuda_occupancy.h (no driver needed);
//   - the PTX: vector loads, mma.sync, cp.async, ldmatrix, shuffles, barriers, local memory, and the
//     innermost loops: PTX instructions per global byte a warp moves per iteration;
//   - the roofline: time = max(bytes / bandwidth share, warp instructions / issue rate) per launch
//     declared in kernels/cuda/lab.json, with which of the two bounds it; global bytes count
//     ld/st.global and cp.async; a kernel whose hot loop has mma.sync is bound "tensor-core (hand
//     model)" with only its DRAM floor here (test/cuda/decode-roofline.mjs has the mma-rate model).
// Writes build-cuda-emu/static/static.json (everything), one JSON per kernel and architecture, and
// static.md (the tables for benchmarks/RESULTS.md); prints the tables. --check: exit 1 when a
// budget in kernels/cuda/lab.json is exceeded or a kernel has no entry there.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { hotLoop, parsePtx, parsePtxas, roofline } from './ptx.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, 'build-cuda-emu', 'static');
const check = process.argv.includes('--check');
const lab = JSON.parse(readFileSync(join(root, 'kernels/cuda/lab.json'), 'utf8'));
// sm_90 is built as sm_90a, as the addon is (CMakeLists.txt): Hopper's wgmma exists only there.
const archs = ['sm_80', 'sm_90'];
const archFlags = (arch) => (arch === 'sm_90' ? ['-gencode', 'arch=compute_90a,code=sm_90a'] : [`-arch=${arch}`]);
mkdirSync(out, { recursive: true });

const nvcc = (args) => execFileSync('nvcc', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
// Runs a tool, returning stdout and stderr together (ptxas -v reports on stderr).
function require_spawn(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  return r.stderr + r.stdout;
}

const demangle = (names) =>
  names.length
    ? spawnSync('c++filt', [], { input: names.join('\n'), encoding: 'utf8' })
        .stdout.trim()
        .split('\n')
    : [];
// "void gptoss::cuda::(anonymous namespace)::rmsnorm_f32_bf16w<true>(float const*, ...)" -> "rmsnorm_f32_bf16w<true>"
function shortName(d) {
  let s = d.replace(/^void /, '');
  let depth = 0,
    end = s.length;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '<') depth++;
    else if (s[i] === '>') depth--;
    else if (s[i] === '(' && depth === 0 && !s.startsWith('(anonymous', i)) {
      end = i;
      break;
    }
  }
  s = s.slice(0, end);
  const parts = s.split(/::(?![^<]*>)/);
  return parts[parts.length - 1];
}

// cuda_occupancy.h needs no driver: a small helper built once.
function occupancyTool() {
  const exe = join(out, 'occupancy');
  const src = join(root, 'test/cuda/occupancy.cc');
  const inc = spawnSync('sh', ['-c', 'dirname $(dirname $(command -v nvcc))'], { encoding: 'utf8' }).stdout.trim();
  const incs = [`${inc}/include`, '/usr/local/cuda/include'].filter((d) => existsSync(join(d, 'cuda_occupancy.h')));
  require_spawn('g++', ['-std=c++17', '-O1', `-I${incs[0]}`, src, '-o', exe]);
  return (arch, regs, smem, threads, dyn) => {
    const r = spawnSync(exe, [arch.slice(3), String(regs), String(smem), String(threads), String(dyn)], {
      encoding: 'utf8',
    });
    const [blocks, warps, maxWarps] = r.stdout.trim().split(' ').map(Number);
    return { blocksPerSM: blocks, warpsPerSM: warps, maxWarpsPerSM: maxWarps };
  };
}

const occupancy = occupancyTool();
const files = readdirSync(join(root, 'kernels/cuda'))
  .filter((f) => f.endsWith('.cu'))
  .sort();
const results = [];
const failures = [];
for (const file of files) {
  for (const arch of archs) {
    const rel = `kernels/cuda/${file}`;
    const info = parsePtxas(
      require_spawn('nvcc', [
        '-std=c++17',
        '-I.',
        ...archFlags(arch),
        '-lineinfo',
        '-c',
        rel,
        '-o',
        '/dev/null',
        '-Xptxas',
        '-v,--warn-on-spills,--warn-on-local-memory-usage',
      ]),
    );
    const ptxFile = join(out, `${file}.${arch}.ptx`);
    require_spawn('nvcc', ['-std=c++17', '-I.', ...archFlags(arch), '-lineinfo', '--ptx', rel, '-o', ptxFile]);
    const ptx = parsePtx(readFileSync(ptxFile, 'utf8'));
    const mangled = Object.keys(info);
    const names = demangle(mangled).map(shortName);
    mangled.forEach((mg, i) => {
      const name = names[i];
      const spec = lab.kernels[name];
      const r = info[mg];
      const p = ptx[mg] ?? { features: {}, loops: [], mmaLoops: [], instructions: 0, text: '' };
      const rec = {
        kernel: name,
        file: rel,
        arch,
        ...r,
        ptx: { instructions: p.instructions, features: p.features, loops: p.loops },
      };
      if (!spec) {
        failures.push(
          `${name} (${rel}, ${arch}): no entry in kernels/cuda/lab.json (launch shape, budgets, roofline launches)`,
        );
        results.push(rec);
        return;
      }
      if (spec.archs && !spec.archs.includes(arch)) {
        rec.stub = `a trap: built for ${spec.archs.join(', ')} only`; // e.g. wgmma, sm_90a's
        results.push(rec);
        return;
      }
      rec.blockThreads = spec.blockThreads;
      rec.occupancy = occupancy(arch, r.registers, r.smem, spec.blockThreads, spec.dynamicSmem ?? 0);
      const b = spec.budget ?? {};
      const over = (what, got, max) => {
        if (max !== undefined && got > max) failures.push(`${name} ${arch}: ${what} ${got} > budget ${max}`);
      };
      over('registers', r.registers, b.maxRegisters);
      over('stack frame bytes', r.stack, b.maxStack);
      over('spill bytes', r.spillStores + r.spillLoads, b.maxSpillBytes);
      over('local memory accesses in PTX', p.features['local memory'] ?? 0, 0);
      // ptxas makes each wgmma wait for the one before when it cannot keep them in flight (C7518).
      if (r.wgmmaSerialized) failures.push(`${name} ${arch}: ptxas serializes its ${r.wgmmaSerialized}`);
      if (b.minWarpsPerSM !== undefined && rec.occupancy.warpsPerSM < b.minWarpsPerSM)
        failures.push(`${name} ${arch}: ${rec.occupancy.warpsPerSM} warps per SM < budget ${b.minWarpsPerSM}`);
      for (const must of spec.ptxMust ?? [])
        if (!p.text.includes(must)) failures.push(`${name} ${arch}: the PTX has no ${must}`);
      // The roofline of each declared launch on the GPU of this architecture (a prediction).
      const hot = hotLoop(p);
      rec.hotLoop = hot ?? null;
      rec.roofline = Object.entries(lab.gpus)
        .filter(([, g]) => g.arch === arch)
        .flatMap(([gpuName, g]) => (spec.launches ?? []).map((l) => roofline(gpuName, g, l, hot)));
      results.push(rec);
      writeFileSync(join(out, `${name.replace(/[^\w]+/g, '_')}.${arch}.json`), JSON.stringify(rec, null, 2) + '\n');
    });
  }
}

const sass =
  existsSync('/usr/bin/nvdisasm') || spawnSync('sh', ['-c', 'command -v nvdisasm']).status === 0
    ? 'nvdisasm is present but SASS checks are not wired in yet'
    : "SASS: not available (nvcc 13 here ships neither cuobjdump nor nvdisasm; Debian non-free nvdisasm 11.8 would need CUDA 13 cubins' ELF headers rewritten, not done in CI)";
writeFileSync(
  join(out, 'static.json'),
  JSON.stringify({ generated: new Date().toISOString(), sass, kernels: results, failures }, null, 2) + '\n',
);

const fmt = (x, d = 1) => (x === undefined || x === null ? '-' : Number(x).toFixed(d));
const resTable = [
  '| kernel | arch | regs | spill B | stack B | smem B | barriers | block | blocks/SM | warps/SM | PTX features | hot loop: PTX instr / warp-byte |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of results) {
  const feats = Object.entries(r.ptx.features)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k}×${n}`)
    .join(', ');
  resTable.push(
    `| ${r.kernel} | ${r.arch} | ${r.registers} | ${r.spillStores + r.spillLoads} | ${r.stack} | ${r.smem} | ${r.barriers} | ${r.blockThreads ?? '-'} | ${r.occupancy?.blocksPerSM ?? '-'} | ${r.occupancy ? `${r.occupancy.warpsPerSM}/${r.occupancy.maxWarpsPerSM}` : '-'} | ${feats} | ${r.hotLoop ? `${r.hotLoop.instructions} / ${r.hotLoop.warpBytes} B = ${fmt(r.hotLoop.instructionsPerByte, 4)}${r.hotLoop.mma ? ` (mma.sync×${r.hotLoop.mma})` : ''}${r.hotLoop.wgmma ? ` (wgmma×${r.hotLoop.wgmma})` : ''}` : '-'} |`,
  );
}
const roofTable = [
  '| kernel | GPU (prediction) | launch | bytes | SMs used | memory µs | issue µs | predicted µs | bound | predicted GB/s |',
  '|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of results)
  for (const p of r.roofline ?? [])
    roofTable.push(
      `| ${r.kernel} | ${p.gpu} | ${p.launch} | ${p.bytes} | ${p.smsUsed} | ${fmt(p.memoryUs, 2)} | ${fmt(p.issueUs, 2)} | ${fmt(p.predictedUs, 2)} | ${p.bound} | ${fmt(p.predictedGBs, 0)} |`,
    );
const md = `Static checks of the nvcc build (nvcc ${nvcc(['--version']).match(/release ([\d.]+)/)?.[1]}; ptxas -v, cuda_occupancy.h, PTX):\n\n${resTable.join('\n')}\n\n${sass}.\n\nStatic roofline — PREDICTIONS, not measurements (time = max(bytes / (bandwidth × SMs used / SMs), bytes × hot-loop PTX instructions per warp-byte / (SMs used × 4 schedulers × boost clock)); launch latency not included). Global bytes count ld/st.global and cp.async copies. Where the hot loop has mma.sync (the k loop of a tensor-core kernel) the bound is "tensor-core (hand model)": its time is the mma rate's, which this model does not give; memory µs is its DRAM floor, and the tensor-core PREDICTIONS are hand models (benchmarks/RESULTS.md; \`npm run cuda:predict\`):\n\n${roofTable.join('\n')}\n`;
writeFileSync(join(out, 'static.md'), md);
console.log(md);
console.log(
  `cuda:static: results in ${join('build-cuda-emu', 'static')}/ (static.json, static.md, one JSON per kernel and architecture)`,
);
if (failures.length) {
  console.log(`cuda:static: ${failures.length} budget failure(s):\n  ${failures.join('\n  ')}`);
  if (check) process.exit(1);
} else {
  console.log('cuda:static: every kernel within its budgets (kernels/cuda/lab.json)');
}
