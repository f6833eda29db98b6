// What a client sees of the server's responsiveness: the longest wait between two chunks of a
// stream. Client and server share the test's event loop, so a long wait here is a blocked loop
// or a stalled engine.

/**
 * Reads a stream to its end, or until `until` has settled (then it cancels the rest); the longest
 * wait between two chunks in ms. The text read is appended to `text`, if given.
 */
export async function longestGap(
  res: Response,
  o: { text?: string[]; until?: Promise<unknown> } = {},
): Promise<number> {
  let stop = false;
  void o.until?.then(
    () => (stop = true),
    () => (stop = true),
  );
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let last = performance.now(),
    worst = 0;
  for (;;) {
    const { done, value } = await reader.read();
    const t = performance.now();
    worst = Math.max(worst, t - last);
    last = t;
    if (value && o.text) o.text.push(decoder.decode(value, { stream: true }));
    if (done) return worst;
    if (stop) {
      await reader.cancel();
      return worst;
    }
  }
}
