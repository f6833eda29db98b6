// The CPU's weights in 2 MB pages: native/weights.cc (mapFile's advice, mappedState, evict) and
// lib/engine/model.ts readWeights, which reads a file the page cache held in 4 KB pages once more.
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { addon } from '../lib/backend/native.js';
import { readWeights } from '../lib/engine/model.js';

const MiB = 2 ** 20;
const dir = mkdtempSync(join(tmpdir(), 'gptoss-huge-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A file written now in 64 KiB pieces, as a download is: where the kernel caches written data in
// small folios (Linux 6.18 on ext4 does, for writes of this size), it stays so when mapped.
function freshFile(name: string, bytes: number): string {
  const path = join(dir, name);
  const piece = Buffer.alloc(64 * 1024);
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < bytes; off += piece.length) {
      piece.writeUInt32LE(off >>> 0, 0);
      writeSync(fd, piece, 0, Math.min(piece.length, bytes - off));
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

describe('weights in 2 MB pages', () => {
  it('mappedState counts what is resident and 2 MB-mapped; evict drops a range, checked by name', async () => {
    const { Weights } = addon();
    const w = new Weights();
    try {
      const size = 8 * MiB;
      const fi = w.mapFile(freshFile('small.bin', size));
      await w.prefetch(fi, 0, size);
      const s = w.mappedState(fi);
      if (s === null) return; // not Linux: nothing to count
      expect(s.resident).toBe(size);
      expect(s.huge).toBeGreaterThanOrEqual(0);
      expect(s.huge).toBeLessThanOrEqual(s.resident);
      w.evict(fi, 0, 4 * MiB);
      expect(w.mappedState(fi)!.resident).toBe(4 * MiB);
      expect(() => w.evict(fi, 0, size + 1)).toThrow(/evict: range outside the file/);
      expect(() => w.evict(fi + 1, 0, 1)).toThrow(/evict: no such file index/);
      expect(() => w.mappedState(fi + 1)).toThrow(/mappedState: no such file index/);
    } finally {
      w.dispose();
    }
  });

  it('readWeights leaves a freshly written file mapped in 2 MB pages where a second read brings them', async (ctx) => {
    const { Weights } = addon();
    // Whether this kernel and file system give a file's mapping 2 MB pages when it is read again.
    const probe = new Weights();
    let supported = false;
    try {
      const size = 64 * MiB;
      const fi = probe.mapFile(freshFile('probe.bin', size));
      await probe.prefetch(fi, 0, size);
      probe.evict(fi, 0, size);
      await probe.prefetch(fi, 0, size);
      const s = probe.mappedState(fi);
      supported = s !== null && s.huge >= size / 2;
    } finally {
      probe.dispose();
    }
    if (!supported) ctx.skip();

    const w = new Weights();
    try {
      const size = 160 * MiB;
      const fi = w.mapFile(freshFile('model.bin', size));
      const seen: number[] = [];
      await readWeights(w, [{ size }], false, undefined);
      const plain = w.mappedState(fi)!;
      expect(plain.resident).toBe(size);
      await readWeights(w, [{ size }], true, (p) => seen.push(p.bytesTotal));
      const s = w.mappedState(fi)!;
      expect(s.resident).toBe(size);
      expect(s.huge).toBeGreaterThanOrEqual(0.9 * size);
      // Progress counts the second read too, where there was one.
      if (plain.huge < size / 2) expect(seen.at(-1)).toBe(2 * size - 64 * MiB);
    } finally {
      w.dispose();
    }

    // A file mostly in 2 MB pages, its first 64 MiB among them, the rest of it in 4 KB pages (what a
    // cache partly pushed out by another process's memory leaves): read again all the same.
    const p = new Weights();
    try {
      const size = 160 * MiB;
      const fi = p.mapFile(freshFile('partly.bin', size));
      await p.prefetch(fi, 0, size);
      p.evict(fi, 0, 128 * MiB);
      await p.prefetch(fi, 0, 128 * MiB);
      const partly = p.mappedState(fi)!;
      expect(partly.huge).toBeGreaterThanOrEqual(64 * MiB);
      expect(partly.huge).toBeLessThan(0.97 * size);
      await readWeights(p, [{ size }], true, undefined);
      const again = p.mappedState(fi)!;
      expect(again.huge).toBeGreaterThanOrEqual(0.9 * size);
      expect(again.huge).toBeGreaterThan(partly.huge);
    } finally {
      p.dispose();
    }
  });
});
