// What `gptoss serve` does with a promise rejection nobody handled. Such a rejection comes from
// one request's work (an extra answer of n > 1 whose client left, say): that request has failed,
// and the server must stay up for everyone else. Node ends the process on an unhandled rejection
// unless a handler is installed; this is that handler.

/** Kinds of failure said at most, so that a loop cannot flood the log. */
export const STRAY_KINDS = 100;

/**
 * A handler for process.on('unhandledRejection'): it writes one line per kind of failure (the
 * first STRAY_KINDS kinds) and never throws, whatever was rejected with (a throw from it would
 * end the process as an uncaught exception).
 */
export function strayRejectionHandler(
  write: (line: string) => void = (line) => void process.stderr.write(line),
): (reason: unknown) => void {
  const seen = new Set<string>();
  return (reason) => {
    try {
      let what: string;
      try {
        what = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
      } catch {
        what = 'a value that cannot be printed';
      }
      if (seen.has(what) || seen.size >= STRAY_KINDS) return;
      seen.add(what);
      write(`gptoss: a request failed outside its handler (the server carries on): ${what}\n`);
    } catch {
      // Nothing more to do: the log could not be written.
    }
  };
}
