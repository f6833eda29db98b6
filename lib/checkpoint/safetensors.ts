// Reads and validates a safetensors header (kernels/MODEL.md, "safetensors": 8-byte little-endian
// header length, a JSON header, then raw little-endian data). Only the header passes through the JS
// heap; tensor bytes are memory-mapped by the addon.
import { open } from 'node:fs/promises';

import { CheckpointError } from '../errors.js';

export type SafetensorsDType =
  | 'BF16'
  | 'F16'
  | 'F32'
  | 'F64'
  | 'U8'
  | 'I8'
  | 'I16'
  | 'I32'
  | 'I64'
  | 'BOOL'
  | 'U16'
  | 'U32'
  | 'U64'
  | 'F8_E4M3'
  | 'F8_E5M2';

const dtypeBytes: Record<SafetensorsDType, number> = {
  BF16: 2,
  F16: 2,
  F32: 4,
  F64: 8,
  U8: 1,
  I8: 1,
  I16: 2,
  I32: 4,
  I64: 8,
  BOOL: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsFile {
  path: string;
  size: number;
  /** Bytes of the JSON header (after the 8-byte length). */
  headerBytes: number;
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/**
 * Headers past this are refused before reading. A gpt-oss header is about 100 KB (540 tensors for
 * 120b); the reference implementation's 100 MB let a hostile shard cost a gigabyte of JSON
 * parsing, so the bound is 16 MiB, also what all shards of a checkpoint may take together.
 */
export const MAX_HEADER_BYTES = 16 * 2 ** 20;

export async function readSafetensorsHeader(path: string, maxHeaderBytes = MAX_HEADER_BYTES): Promise<SafetensorsFile> {
  const fail = (msg: string, tensor?: string): never => {
    throw new CheckpointError(msg, { file: path, tensor });
  };
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new CheckpointError(`cannot open: ${(e as Error).message}`, { file: path }, { cause: e });
  }
  try {
    const size = (await fh.stat()).size;
    if (size < 8) fail(`file is ${size} bytes, too short for a safetensors header`);
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(size - 8)) fail(`header length ${headerLen} runs past the end of the ${size}-byte file`);
    if (headerLen > BigInt(maxHeaderBytes))
      fail(`header length ${headerLen} exceeds the ${maxHeaderBytes} bytes a header may take`);
    const n = Number(headerLen);
    const headerBuf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(headerBuf, 0, n, 8);
    if (bytesRead !== n) fail(`header truncated: read ${bytesRead} of ${n} bytes`);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch (e) {
      fail(`header is not valid JSON (${(e as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
    const dataStart = 8 + n;
    const tensors = new Map<string, SafetensorsEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof raw === 'object' && raw !== null) metadata = raw as Record<string, string>;
        continue;
      }
      const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof info !== 'object' || info === null) fail('entry is not an object', name);
      if (typeof info.dtype !== 'string' || !Object.hasOwn(dtypeBytes, info.dtype))
        fail(`unknown dtype ${JSON.stringify(info.dtype)}`, name);
      const dtype = info.dtype as SafetensorsDType;
      if (!Array.isArray(info.shape) || !info.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        fail(`shape ${JSON.stringify(info.shape)} is not a list of non-negative integers`, name);
      const shape = info.shape as number[];
      const offs = info.data_offsets;
      if (
        !Array.isArray(offs) ||
        offs.length !== 2 ||
        !offs.every((d) => Number.isSafeInteger(d) && d >= 0) ||
        offs[0] > offs[1]
      )
        fail(`data_offsets ${JSON.stringify(offs)} are not [begin, end] with 0 <= begin <= end`, name);
      const [begin, end] = offs as [number, number];
      const numel = shape.reduce((a, b) => a * b, 1);
      if (end - begin !== numel * dtypeBytes[dtype])
        fail(
          `data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${dtype}${JSON.stringify(shape)} needs ${numel * dtypeBytes[dtype]}`,
          name,
        );
      if (dataStart + end > size)
        fail(
          `data_offsets [${begin}, ${end}] run past the end of the data (file truncated? ${size - dataStart} data bytes)`,
          name,
        );
      tensors.set(name, { name, dtype, shape, offset: dataStart + begin, byteLength: end - begin });
    }
    // Tensors must not share bytes: a writer bug that would make two weights alias.
    const sorted = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1],
        cur = sorted[i];
      if (cur.offset < prev.offset + prev.byteLength) fail(`data overlaps tensor ${prev.name}`, cur.name);
    }
    return { path, size, headerBytes: n, tensors, metadata };
  } finally {
    await fh.close();
  }
}
