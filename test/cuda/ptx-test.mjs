#!/usr/bin/env node
// Checks test/cuda/ptx.mjs (the PTX side of npm run cuda:static) on PTX written by hand: global
// bytes per instruction (ld/st.global and cp.async), the hot loop, and the static roofline's bound;
// and test/cuda/sass-counts.mjs (benchmarks/gpu.sh's SASS counts) on cuobjdump output written by hand.
// Run by test/cuda/run.sh; needs no nvcc.
import assert from 'node:assert/strict';

import { globalBytes, hotLoop, parsePtx, parsePtxas, roofline } from './ptx.mjs';
import { sassCounts } from './sass-counts.mjs';

// Global bytes a thread moves with one instruction.
assert.equal(globalBytes('ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1];'), 16);
assert.equal(globalBytes('@%p1 ld.global.nc.u8 %rs1, [%rd2];'), 1);
assert.equal(globalBytes('st.global.v2.f32 [%rd3], {%f1, %f2};'), 8);
assert.equal(globalBytes('cp.async.cg.shared.global [%r12], [%rd5], 16;'), 16);
assert.equal(globalBytes('@%p3 cp.async.ca.shared.global [%r1], [%rd1], 8;'), 8);
assert.equal(globalBytes('cp.async.ca.shared.global.L2::128B [%r1], [%rd1], 4;'), 4);
assert.equal(globalBytes('cp.async.commit_group;'), 0);
assert.equal(globalBytes('ld.shared.v4.u32 {%r1, %r2, %r3, %r4}, [%r5];'), 0);

// Two kernels: a GEMV whose loop streams 16 B a lane by ld.global, and a tensor-core GEMM whose
// k loop copies 16 B a lane by cp.async, loads one scale byte and issues 2 mma.sync; its k loop
// holds a small wait loop of its own, and it has an epilogue loop with one scalar load.
const ptx = `
.visible .entry gemv(
)
{
$L__BB0_1:
	ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1];
	add.s32 %r5, %r5, 1;
	fma.rn.f32 %f1, %f2, %f3, %f1;
	setp.lt.s32 %p1, %r5, %r6;
	@%p1 bra $L__BB0_1;
	ret;
}
.visible .entry gemm(
)
{
$L__BB1_1:
	cp.async.cg.shared.global [%r12], [%rd5], 16;
	cp.async.commit_group;
	ld.global.nc.u8 %rs1, [%rd6];
$L__BB1_2:
	add.s32 %r7, %r7, 1;
	setp.lt.s32 %p2, %r7, %r8;
	@%p2 bra $L__BB1_2;
	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1,%f2,%f3,%f4}, {%r1,%r2,%r3,%r4}, {%r5,%r6}, {%f1,%f2,%f3,%f4};
	mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f5,%f6,%f7,%f8}, {%r1,%r2,%r3,%r4}, {%r9,%r10}, {%f5,%f6,%f7,%f8};
	setp.lt.s32 %p1, %r5, %r6;
	@%p1 bra $L__BB1_1;
$L__BB1_3:
	ld.global.f32 %f9, [%rd7];
	setp.lt.s32 %p3, %r9, %r10;
	@%p3 bra $L__BB1_3;
	ret;
}
`;
const e = parsePtx(ptx);
assert.deepEqual(Object.keys(e).sort(), ['gemm', 'gemv']);

const gemvHot = hotLoop(e.gemv);
assert.equal(gemvHot.warpBytes, 16 * 32);
assert.equal(gemvHot.instructions, 5);
assert.equal(gemvHot.mma, 0);

// The k loop (not the wait loop inside it, not the epilogue) is the GEMM's hot loop, and its bytes
// include the cp.async copy: (16 + 1) B per lane.
const gemmHot = hotLoop(e.gemm);
assert.equal(gemmHot.mma, 2);
assert.equal(gemmHot.warpBytes, (16 + 1) * 32);
assert.equal(gemmHot.instructions, 10);

const gpu = { arch: 'sm_90', sms: 132, clockGHz: 1.98, bandwidthGBs: 3350, schedulersPerSM: 4 };
const launch = { name: 'x', bytes: 1e9, flops: 0, blocks: 1000 };
const gemvRoof = roofline('H100 SXM', gpu, launch, gemvHot);
assert.equal(gemvRoof.bound, 'memory');
assert.ok(Math.abs(gemvRoof.memoryUs - (1e9 / 3350e9) * 1e6) < 1e-6);
assert.equal(gemvRoof.predictedUs, gemvRoof.memoryUs);
assert.ok(gemvRoof.issueUs > 0 && gemvRoof.issueUs < gemvRoof.memoryUs);
// An issue-bound loop without mma: 1000 instructions per 16 B a lane (H100 SXM issues ~0.31 per byte).
const slow = roofline('H100 SXM', gpu, launch, {
  instructions: 1000,
  warpBytes: 512,
  instructionsPerByte: 1000 / 512,
  mma: 0,
});
assert.equal(slow.bound, 'issue');
assert.ok(slow.predictedUs > slow.memoryUs);
// A tensor-core k loop: no issue figure, only the DRAM floor; the time is the hand model's.
const gemmRoof = roofline('H100 SXM', gpu, launch, gemmHot);
assert.equal(gemmRoof.bound, 'tensor-core (hand model)');
assert.equal(gemmRoof.issueUs, null);
assert.equal(gemmRoof.predictedUs, null);
assert.ok(Math.abs(gemmRoof.memoryUs - gemvRoof.memoryUs) < 1e-9);

// cuobjdump -sass output: two kernels for sm_80, one for sm_90.
const sass = `
Fatbin elf code:
================
arch = sm_80
code version = [1,8]
host = linux
compile_size = 64bit

\tcode for sm_80
\t\tFunction : _Z4gemvPKf
\t.headerflags\t@"EF_CUDA_SM80 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM80)"
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128.CONSTANT R4, [R2.64] ;
        /*0020*/              @!P0 LDG.E.128 R8, [R2.64+0x10] ;
        /*0030*/                   STL.64 [R1], R4 ;
        /*0040*/                   LDL.LU R9, [R1+0x4] ;
        /*0050*/                   LDG.E R10, [R2.64] ;
        /*0060*/                   EXIT ;
\t\t..........

\t\tFunction : _Z4gemmv
        /*0000*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0010*/                   HMMA.16816.F32.BF16 R16, R8, R14, R16 ;
        /*0020*/                   LDSM.16.M88.4 R8, [R3] ;
        /*0030*/                   EXIT ;

\tcode for sm_90
\t\tFunction : _Z4gemvPKf
        /*0000*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;
        /*0010*/                   EXIT ;
`;
assert.deepEqual(sassCounts(sass), [
  { arch: 'sm_80', kernel: '_Z4gemvPKf', counts: { 'LDG.E.128': 2, HMMA: 0, LDL: 1, STL: 1 } },
  { arch: 'sm_80', kernel: '_Z4gemmv', counts: { 'LDG.E.128': 0, HMMA: 2, LDL: 0, STL: 0 } },
  { arch: 'sm_90', kernel: '_Z4gemvPKf', counts: { 'LDG.E.128': 1, HMMA: 0, LDL: 0, STL: 0 } },
]);

// A wgmma k loop: its loop is the hot one (tensor work: the hand model's), as an mma.sync loop's.
const wg = parsePtx(`
.visible .entry wg(
)
{
$L__BB2_1:
	cp.async.cg.shared.global [%r1], [%rd1], 16;
	wgmma.fence.sync.aligned;
	@q wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%f1, %f2, %f3, %f4, %f5, %f6, %f7, %f8}, {%r2, %r3, %r4, %r5}, %rd2, 1, 1, 1, 0;
	wgmma.commit_group.sync.aligned;
	wgmma.wait_group.sync.aligned 1;
	@%p1 bra $L__BB2_1;
	ret;
}
`).wg;
const wgHot = hotLoop(wg);
assert.equal(wgHot.wgmma, 1);
assert.equal(wgHot.mma, 0);
assert.equal(wg.features['wgmma.mma_async'], 1);
assert.equal(roofline('H100 SXM', gpu, launch, wgHot).bound, 'tensor-core (hand model)');

// ptxas -v's report: per entry its resources, and the C7518 remark on the entry whose wgmma it
// serialized (static.mjs fails such a kernel), as nvcc 13 prints them.
const report = parsePtxas(`ptxas info    : 0 bytes gmem
ptxas info    : (C7518) Potential Performance Loss: wgmma.mma_async instructions are serialized due to program dependence on compiler-inserted WG.DP in divergent path in the function '_Z4slowv'
ptxas info    : Compiling entry function '_Z4slowv' for 'sm_90a'
ptxas info    : Function properties for _Z4slowv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 190 registers, used 1 barriers, 8192 bytes smem
ptxas info    : Compiling entry function '_Z4fastv' for 'sm_90a'
ptxas info    : Function properties for _Z4fastv
    0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 184 registers, used 1 barriers
`);
assert.match(report._Z4slowv.wgmmaSerialized, /serialized due to program dependence/);
assert.equal(report._Z4slowv.registers, 190);
assert.equal(report._Z4slowv.smem, 8192);
assert.equal(report._Z4fastv.wgmmaSerialized, undefined);
assert.equal(report._Z4fastv.spillStores, 8);

console.log(
  'test:cuda: ptx-test: PTX global bytes (ld/st.global, cp.async), hot loops (mma.sync, wgmma) and roofline bounds, ptxas reports (C7518), SASS counts as written by hand',
);
