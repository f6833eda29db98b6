// A progress bar counted in bytes, on a terminal only. Its value and total are the bytes
// themselves: a bar counted in whole MB (floor of the done, ceiling of the total) stopped at 96%
// on a 25.7 MB checkpoint, and at 66% on a 2.4 MB one.
import { SingleBar } from 'cli-progress';

export interface ByteBar {
  /** Starts the bar at the first call; `payload` fills the format's other {fields}. */
  update(done: number, total: number, payload?: Record<string, string>): void;
  /** Draws the last state and ends the line (the cursor shown again); harmless when never started. */
  stop(): void;
}

/** `n` bytes in the unit that suits `total`: GB to 2 decimals from 1 GB, else MB to 1 decimal. */
export function formatBytes(n: number, total: number): string {
  return total >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : `${(n / 1e6).toFixed(1)} MB`;
}

/**
 * A bar on `stream` when it is a terminal, nothing otherwise. The format takes cli-progress's
 * fields ({bar}, {percentage}, {eta_formatted}, {duration}) and {done} / {size}: the bytes done and
 * the total, each with its unit.
 */
export function byteBar(format: string, stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr): ByteBar {
  if (!stream.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new SingleBar({ format, hideCursor: true, stream, etaBuffer: 50 });
  let started = false;
  return {
    update(done, total, payload = {}) {
      const fields = { ...payload, done: formatBytes(done, total), size: formatBytes(total, total) };
      if (!started) bar.start(total, done, fields);
      started = true;
      bar.setTotal(total);
      bar.update(Math.min(done, total), fields);
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}
