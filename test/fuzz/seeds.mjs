// Seeds for the sampler fuzzer from the golden fixtures: each row of tiny-a's reference logits
// (1,000 entries) under a few sampling settings, in sample_fuzz.cc's input format.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [out, fixtures] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const rows = new Float32Array(readFileSync(join(fixtures, 'tiny-a', 'seq7.fp32.f32')).buffer.slice(0));
const V = 1000;
const settings = [
  { flags: 0, temperature: 1, topK: 0, topP: 1, minP: 0 },
  { flags: 0, temperature: 0, topK: 0, topP: 1, minP: 0 },
  { flags: 0, temperature: 0.7, topK: 40, topP: 0.95, minP: 0.05 },
  { flags: 1, temperature: 1, topK: 0, topP: 0.9, minP: 0 },
];
let n = 0;
for (let row = 0; row * V < rows.length; row++)
  for (const s of settings) {
    const mask = s.flags & 1 ? Math.ceil(V / 32) : 0;
    const buf = Buffer.alloc(44 + 2 * (2 + 4) + mask * 4 + V * 4);
    let o = 0;
    o = buf.writeUInt16LE(V - 1, o);
    o = buf.writeUInt8(s.flags, o);
    o = buf.writeFloatLE(s.temperature, o);
    o = buf.writeInt32LE(s.topK, o);
    o = buf.writeFloatLE(s.topP, o);
    o = buf.writeFloatLE(s.minP, o);
    o = buf.writeFloatLE(0.5, o); // presence
    o = buf.writeFloatLE(0.25, o); // frequency
    o = buf.writeFloatLE(1, o); // repetition
    o = buf.writeInt32LE(-1, o); // ban_from
    o = buf.writeUInt8(2, o); // bias entries
    o = buf.writeUInt8(0, o); // history entries
    o = buf.writeUInt8(5, o); // top logprobs
    o = buf.writeUInt16LE(row * 11, o); // token
    o = buf.writeUInt32LE(0, o);
    for (const [id, v] of [
      [3, 2.5],
      [999, -100],
    ]) {
      o = buf.writeUInt16LE(id, o);
      o = buf.writeFloatLE(v, o);
    }
    for (let w = 0; w < mask; w++) o = buf.writeUInt32LE(w % 3 ? 0xffffffff : 0x0f0f0f0f, o);
    for (let i = 0; i < V; i++) o = buf.writeFloatLE(rows[row * V + i], o);
    writeFileSync(join(out, `seed-${String(n++).padStart(3, '0')}`), buf);
  }
console.log(`${n} seeds in ${out}`);
