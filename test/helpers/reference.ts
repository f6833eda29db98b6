// Plain float64 reference implementations of the ops, written from kernels/MODEL.md.
export const FP4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];

/**
 * Dequantises row r of an MXFP4 matrix [rows, K/32, 16] + scales [rows, K/32]
 * (kernels/MODEL.md, "MXFP4").
 */
export function mxfp4Row(blocks: Uint8Array, scales: Uint8Array, r: number, K: number): Float64Array {
  const nb = K / 32;
  const out = new Float64Array(K);
  for (let g = 0; g < nb; g++) {
    const s = 2 ** (scales[r * nb + g] - 127);
    for (let b = 0; b < 16; b++) {
      const byte = blocks[(r * nb + g) * 16 + b];
      out[g * 32 + 2 * b] = FP4[byte & 15] * s; // low nibble: even element
      out[g * 32 + 2 * b + 1] = FP4[byte >> 4] * s;
    }
  }
  return out;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export function swiglu(g: number, l: number, limit = 7, alpha = 1.702): number {
  g = Math.min(g, limit);
  l = Math.min(Math.max(l, -limit), limit);
  return (g / (1 + Math.exp(-alpha * g))) * (l + 1);
}
