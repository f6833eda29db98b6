// The grammar compiler and matchers (xgrammar's WASM) on a worker thread of their own: compiling
// a schema can take seconds and a bad one can fault the WASM instance, and neither may stall the
// event loop or break grammars for other requests. lib/chat/grammar.ts drives this thread; a thread
// whose instance faulted is never asked again (a fresh one takes its place).
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';

import {
  FIRST_SPECIAL,
  GRAMMAR_VOCAB,
  type GrammarReply,
  type GrammarRequest,
  type StepResult,
} from './grammar-protocol.js';
import { getTokenizer } from './tokenizer.js';

interface Xgrammar {
  TokenizerInfo: {
    createTokenizerInfo(
      vocab: string[],
      type: string,
      prependSpace: boolean,
      vocabSize: number,
      stop: number[],
    ): Promise<unknown>;
  };
  GrammarCompiler: { createGrammarCompiler(info: unknown, cache?: boolean): Promise<XCompiler> };
  GrammarMatcher: { createGrammarMatcher(g: XCompiled, stop?: number[]): Promise<XMatcher> };
}
interface XCompiler {
  compileJSONSchema(
    schema: string,
    anyWhitespace?: boolean,
    indent?: number,
    separators?: [string, string],
    strict?: boolean,
  ): Promise<XCompiled>;
}
interface XCompiled {
  dispose(): void;
}
interface XMatcher {
  acceptToken(id: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  dispose(): void;
}

// The package labels its UMD bundle an ES module, which it is not: compile it as CommonJS.
function xgrammar(): Xgrammar {
  const file = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
  const m = new Module(file) as Module & {
    _compile(src: string, file: string): void;
    filename: string;
    paths: string[];
  };
  m.filename = file;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
  m._compile(readFileSync(file, 'utf8'), file);
  return m.exports as Xgrammar;
}

// GPT-2's byte-to-character map: how Hugging Face writes byte-level tokens, which xgrammar's
// "byte_level" vocabulary type decodes back to bytes (a token may be part of a UTF-8 character).
function byteLevelMap(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCharCode(printable.includes(b) ? b : 256 + extra++);
  return map;
}

// About half a second, once per thread: every token's bytes, then xgrammar's preprocessing.
async function createCompiler(xg: Xgrammar): Promise<XCompiler> {
  const tok = getTokenizer();
  const map = byteLevelMap();
  const vocab = new Array<string>(GRAMMAR_VOCAB);
  for (let id = 0; id < GRAMMAR_VOCAB; id++) {
    // Specials are empty strings: xgrammar never lets text match them.
    if (id >= FIRST_SPECIAL) {
      vocab[id] = '';
      continue;
    }
    let s = '';
    for (const b of tok.decodeBytes([id])) s += map[b];
    vocab[id] = s;
  }
  const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, 'byte_level', false, GRAMMAR_VOCAB, []);
  return xg.GrammarCompiler.createGrammarCompiler(info, true);
}

const MAX_COMPILED = 64;

// xgrammar says why it gives up on stderr ("[FATAL] file:line: Check failed: ... : the reason")
// and then aborts with a bare "Aborted()": keep the reason for the reply, and off the server's log.
let lastComplaint: string | undefined;
function catchComplaints(): void {
  const keep = (...args: unknown[]) => {
    const line = args.map(String).join(' ');
    lastComplaint =
      /\[FATAL\][^:]*:\d+: (?:Check failed: \(.*?\) is false: )?(.*)/.exec(line)?.[1]?.trim() ?? lastComplaint;
  };
  console.error = keep;
  console.warn = keep;
  console.log = keep; // its warnings (a regex escape it reads literally, ...) are for us, not the log
}

async function serve(): Promise<void> {
  const port = parentPort!;
  catchComplaints();
  const xg = xgrammar();
  const compiler = await createCompiler(xg);
  const compiled = new Map<string, XCompiled>(); // least recently used first
  const matchers = new Map<number, XMatcher>();

  const compile = async (key: string): Promise<XCompiled> => {
    let g = compiled.get(key);
    if (g) compiled.delete(key);
    // One line, `{"a": 1, "b": [2, 3]}` spacing, no properties beyond those the schema names.
    g ??= await compiler.compileJSONSchema(key, false, -1, undefined, true);
    compiled.set(key, g);
    while (compiled.size > MAX_COMPILED) {
      const [oldest, c] = compiled.entries().next().value as [string, XCompiled];
      compiled.delete(oldest);
      c.dispose(); // matchers made from it hold their own reference
    }
    return g;
  };

  // One request at a time, in order: a mask must follow the accept before it.
  let chain = Promise.resolve();
  port.on('message', (r: GrammarRequest) => {
    chain = chain.then(async () => {
      if (r.op === 'dispose') {
        matchers.get(r.mid)?.dispose();
        matchers.delete(r.mid);
        return;
      }
      lastComplaint = undefined;
      try {
        switch (r.op) {
          case 'compile': {
            const g = await compile(r.key);
            if (!r.keep) {
              compiled.delete(r.key);
              g.dispose();
            }
            return port.postMessage({ id: r.id, ok: true } satisfies GrammarReply);
          }
          case 'matcher':
            matchers.set(r.mid, await xg.GrammarMatcher.createGrammarMatcher(await compile(r.key), [r.stop]));
            return port.postMessage({ id: r.id, ok: true } satisfies GrammarReply);
          case 'steps': {
            // Every constrained sequence of an engine step in one message each way.
            const results: StepResult[] = [];
            const transfer: ArrayBuffer[] = [];
            for (const { mid, token } of r.steps) {
              const m = matchers.get(mid);
              if (!m) {
                results.push({ error: `no matcher ${mid}` });
                continue;
              }
              if (token >= 0 && !m.acceptToken(token)) {
                results.push({ mask: null, refused: true, terminated: false });
                continue;
              }
              const terminated = m.isTerminated();
              const mask = terminated ? null : Int32Array.from(await m.getNextTokenBitmask());
              if (mask) transfer.push(mask.buffer);
              results.push({ mask, refused: false, terminated });
            }
            return port.postMessage({ id: r.id, ok: true, results } satisfies GrammarReply, transfer);
          }
        }
      } catch (e) {
        port.postMessage({
          id: r.id,
          ok: false,
          message: lastComplaint ?? (e as Error)?.message ?? String(e),
        } satisfies GrammarReply);
      }
    });
  });
  port.postMessage({ op: 'ready' } satisfies GrammarReply);
}

if (parentPort && (workerData as { grammar?: boolean } | undefined)?.grammar) void serve();
