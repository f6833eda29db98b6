// A small seeded generator for benchmark inputs (token ids, lengths, arrivals, expert choices):
// mulberry32, in 32-bit integer arithmetic throughout (an LCG in doubles loses its low bits past
// 2^53 and cycles over a handful of values).
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
