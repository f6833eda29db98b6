// What lib/chat/grammar.ts (the host) and lib/chat/grammar-worker.ts (the thread) say to each
// other, and the vocabulary both are built for: one module both import, so neither imports the other.

/** The vocabulary xgrammar is built for: o200k_harmony's 201,088 rows. */
export const GRAMMAR_VOCAB = 201088;
/** Ids below this are byte-pair tokens; the rest are Harmony's specials and reserved ids. */
export const FIRST_SPECIAL = 199998;

/** What the host asks; every request but `dispose` gets one reply with its id. */
export type GrammarRequest =
  | { id: number; op: 'compile'; key: string; keep: boolean }
  | { id: number; op: 'matcher'; mid: number; key: string; stop: number }
  | { id: number; op: 'steps'; steps: MatcherStep[] }
  | { op: 'dispose'; mid: number };
export type GrammarReply =
  { op: 'ready' } | { id: number; ok: true; results?: StepResult[] } | { id: number; ok: false; message: string };
/** One matcher's step: accept `token` (if >= 0), then the mask for the next one. */
export interface MatcherStep {
  mid: number;
  token: number;
}
/** Refused: the token did not continue the document. A terminated matcher has no mask. */
export type StepResult = { mask: Int32Array | null; refused: boolean; terminated: boolean } | { error: string };
