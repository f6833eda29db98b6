// Tokenizer.encodeAsync()'s thread: a tokenizer of its own (tiktoken's WASM, the rank table) that
// encodes large prompts, which take about a second per 4 MB, away from the server's event loop.
import { parentPort } from 'node:worker_threads';

import { type EncodeReply, type EncodeRequest, getTokenizer } from './tokenizer.js';

parentPort!.on('message', (req: EncodeRequest) => {
  let reply: EncodeReply;
  try {
    reply = {
      id: req.id,
      ok: true,
      ids: Uint32Array.from(getTokenizer().encodeParts(req.parts, { allowedSpecial: req.allowed })),
    };
  } catch (e) {
    reply = { id: req.id, ok: false, message: e instanceof Error ? e.message : String(e) };
  }
  parentPort!.postMessage(reply, reply.ok ? [reply.ids.buffer as ArrayBuffer] : []);
});
