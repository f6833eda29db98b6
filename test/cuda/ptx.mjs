// The PTX side of test/cuda/static.mjs (npm run cuda:static), apart so that test/cuda/ptx-test.mjs
// can check it on PTX written by hand: global bytes per instruction, the innermost loops of each
// entry, the hot loop, and the static roofline of one launch (a PREDICTION, never a measurement).

const typeBytes = {
  b8: 1,
  u8: 1,
  s8: 1,
  b16: 2,
  u16: 2,
  s16: 2,
  f16: 2,
  bf16: 2,
  b32: 4,
  u32: 4,
  s32: 4,
  f32: 4,
  b64: 8,
  u64: 8,
  s64: 8,
  f64: 8,
};
// Bytes one thread moves from or to global memory with one PTX instruction: ld/st.global, and
// cp.async.ca/cg.shared.global [dst], [src], N (N bytes global -> shared, bypassing the registers).
export function globalBytes(ins) {
  const c = ins.match(
    /^(?:@!?%p\d+\s+)?cp\.async\.c[ag]\.shared\.global(?:\.[\w:]+)*\s+\[[^\]]+\],\s*\[[^\]]+\],\s*(\d+)/,
  );
  if (c) return +c[1];
  const m = ins.match(/^(?:@!?%p\d+\s+)?(ld|st)\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.([a-z]+\d+)\s/);
  if (!m) return 0;
  return (m[2] ? +m[2] : 1) * (typeBytes[m[3]] ?? 4);
}

// ptxas -v's report (stderr) per entry: registers, barriers, static shared memory, stack, spills,
// and wgmmaSerialized: the reason of its C7518 remark ("Potential Performance Loss: wgmma.mma_async
// instructions are serialized due to ... in the function 'NAME'") when it made that entry's wgmma
// wait for each other.
export function parsePtxas(text) {
  const fns = {};
  let cur = null;
  const serialized = new Map(); // ptxas: this kernel's wgmma wait for each other (see below)
  for (const line of text.split('\n')) {
    const w = line.match(/Potential Performance Loss: (wgmma[^']*) in the function '([^']+)'/);
    if (w) serialized.set(w[2], w[1]);
    let m = line.match(/Compiling entry function '([^']+)' for '(sm_\d+a?)'/);
    if (m) {
      cur = fns[m[1]] = { registers: 0, barriers: 0, smem: 0, stack: 0, spillStores: 0, spillLoads: 0, cmem: 0 };
      continue;
    }
    if (!cur) continue;
    m = line.match(/(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/);
    if (m) Object.assign(cur, { stack: +m[1], spillStores: +m[2], spillLoads: +m[3] });
    m = line.match(/Used (\d+) registers/);
    if (m) cur.registers = +m[1];
    m = line.match(/used (\d+) barriers/);
    if (m) cur.barriers = +m[1];
    m = line.match(/(\d+) bytes smem/);
    if (m) cur.smem = +m[1];
  }
  for (const [fn, why] of serialized) if (fns[fn]) fns[fn].wgmmaSerialized = why;
  return fns;
}

export function parsePtx(text) {
  const entries = {};
  const chunks = text.split(/\n(?=\.(?:visible\s+)?\.?entry\s)/);
  for (const chunk of chunks) {
    const m = chunk.match(/\.entry\s+(\S+?)\(/);
    if (!m) continue;
    const lines = chunk.split('\n').map((l) => l.trim());
    const labels = new Map();
    const isIns = (l) =>
      l && l.endsWith(';') && !l.startsWith('.') && !l.startsWith('//') && !l.startsWith('{') && !l.startsWith('}');
    lines.forEach((l, i) => {
      const lm = l.match(/^(\$L__\w+):/);
      if (lm) labels.set(lm[1], i);
    });
    const loops = [];
    lines.forEach((l, i) => {
      const bm = l.match(/bra(?:\.uni)?\s+(\$L__\w+);/);
      if (bm && labels.has(bm[1]) && labels.get(bm[1]) < i) loops.push({ start: labels.get(bm[1]), end: i });
    });
    const stats = ({ start, end }) => {
      const body = lines.slice(start, end + 1).filter(isIns);
      const bytes = body.reduce((s, l) => s + globalBytes(l), 0) * 32;
      const mma = body.filter((l) => /mma\.sync/.test(l)).length;
      const wgmma = body.filter((l) => /wgmma\.mma_async/.test(l)).length;
      return {
        instructions: body.length,
        warpBytes: bytes,
        instructionsPerByte: bytes ? body.length / bytes : null,
        mma,
        wgmma,
      };
    };
    const within = (b, a) => b !== a && b.start > a.start && b.end < a.end;
    const innermost = loops.filter((a) => !loops.some((b) => within(b, a)));
    const loopStats = innermost.map(stats);
    // The loops that hold mma.sync or wgmma with no loop inside them that does (a tensor-core
    // kernel's k loop may hold small loops of its own, e.g. waits or row-wise softmax steps).
    const mmaLoop = (a) => lines.slice(a.start, a.end + 1).some((l) => /mma\.sync|wgmma\.mma_async/.test(l));
    const mmaLoops = loops.filter((a) => mmaLoop(a) && !loops.some((b) => within(b, a) && mmaLoop(b))).map(stats);
    const all = lines.filter(isIns);
    const count = (re) => all.filter((l) => re.test(l)).length;
    entries[m[1]] = {
      instructions: all.length,
      features: {
        'ld.global.nc.v4': count(/ld\.global\.nc\.v4/),
        'ld.global.v4': count(/ld\.global(\.\w+)*\.v4/),
        'st.global.v4': count(/st\.global(\.\w+)*\.v4/),
        'mma.sync': count(/mma\.sync/),
        'wgmma.mma_async': count(/wgmma\.mma_async/),
        ldmatrix: count(/ldmatrix/),
        'cp.async': count(/cp\.async\.(c[ag])/),
        'shfl.sync': count(/shfl\.sync/),
        'bar.sync': count(/bar\.sync|barrier\.sync/),
        'ld.shared': count(/ld\.shared/),
        'local memory': count(/(ld|st)\.local/),
      },
      text: all.join('\n'),
      loops: loopStats,
      mmaLoops,
    };
  }
  return entries;
}

// The hot loop of an entry: for a tensor-core kernel the loop with the most mma.sync or wgmma that
// has no loop with either inside it (its k loop), else the innermost loop with the most PTX
// instructions per global byte.
const tensorOps = (l) => (l.mma ?? 0) + (l.wgmma ?? 0);
export function hotLoop(entry) {
  const mma = [...(entry.mmaLoops ?? [])].sort((x, y) => tensorOps(y) - tensorOps(x));
  if (mma.length) return mma[0];
  return entry.loops
    .filter((l) => l.instructionsPerByte !== null)
    .sort((x, y) => y.instructionsPerByte - x.instructionsPerByte)[0];
}

// One launch declared in kernels/cuda/lab.json on one GPU (lab.gpus): time = max(DRAM bytes at the
// bandwidth share of the SMs the launch can use, warp instructions of the hot loop at 4 per clock
// per SM). A hot loop with mma.sync or wgmma is bound "tensor-core (hand model)": its time is the mma rate's,
// which instructions per DRAM byte do not model, so only its DRAM floor (memoryUs) is given here;
// the tensor-core time is a hand model (benchmarks/RESULTS.md, test/cuda/decode-roofline.mjs).
export function roofline(gpuName, g, l, hot) {
  const smsUsed = Math.min(g.sms, l.blocks);
  const tMem = l.bytes / (g.bandwidthGBs * 1e9 * (smsUsed / g.sms));
  const row = {
    prediction: true,
    gpu: gpuName,
    launch: l.name,
    bytes: l.bytes,
    flops: l.flops,
    smsUsed,
    memoryUs: tMem * 1e6,
  };
  if (hot && tensorOps(hot) > 0)
    return {
      ...row,
      issueUs: null,
      predictedUs: null,
      bound: 'tensor-core (hand model)',
      predictedGBs: null,
      shareOfBandwidth: null,
    };
  const warpInstr = hot ? l.bytes * hot.instructionsPerByte : 0;
  const tIssue = warpInstr / (smsUsed * g.schedulersPerSM * g.clockGHz * 1e9);
  const t = Math.max(tMem, tIssue);
  return {
    ...row,
    issueUs: tIssue * 1e6,
    predictedUs: t * 1e6,
    bound: tIssue > tMem ? 'issue' : 'memory',
    predictedGBs: l.bytes / t / 1e9,
    shareOfBandwidth: l.bytes / t / (g.bandwidthGBs * 1e9),
  };
}
