// One log line per request (createApp's `log` option), written with pino: JSON lines for a log
// collector, or a short line of our own for a person at a terminal.
import { pino } from 'pino';

/** What createApp reports when a request's response has ended. */
export interface RequestLog {
  method: string;
  /** The route pattern that answered (`/v1/models/:id`), or the path when none did. */
  route: string;
  status: number;
  /** Prompt tokens of the request's generation (0 for routes that generate nothing). */
  tokensIn: number;
  /** Tokens generated, all answers of n together (so far, for a request cut short). */
  tokensOut: number;
  /** From the request's arrival to its response's end (a stream's last byte). */
  ms: number;
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Control characters (a client-chosen path) shown escaped, so a line cannot rewrite a terminal. */
const printable = (s: string) =>
  s.replace(/[\x00-\x1f\x7f-\x9f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** The terminal's line: `12:04:05 POST /v1/chat/completions 200 31 -> 120 tokens 2345 ms`. */
export function formatRequest(r: RequestLog, time: Date = new Date()): string {
  const hms = time.toTimeString().slice(0, 8);
  const tokens = r.tokensIn || r.tokensOut ? ` ${r.tokensIn} -> ${r.tokensOut} tokens` : '';
  return `${hms} ${r.method} ${printable(r.route)} ${r.status}${tokens} ${Math.round(r.ms)} ms`;
}

export interface RequestLoggerOptions {
  /** pino's level; requests log at info (5xx at error). Default info. */
  level?: LogLevel;
  /** The terminal's line instead of JSON (default: when stderr is a terminal). */
  human?: boolean;
  /** Where lines go (default stderr). */
  write?: (line: string) => void;
}

/** A `log` for createApp: pino JSON lines, or formatRequest's on a terminal. */
export function requestLogger(options: RequestLoggerOptions = {}): (r: RequestLog) => void {
  const write = options.write ?? ((s: string) => void process.stderr.write(s));
  const human = options.human ?? process.stderr.isTTY === true;
  const stream = {
    write: (line: string) => {
      if (!human) return write(line);
      const o = JSON.parse(line) as RequestLog & { time: number };
      write(`${formatRequest(o, new Date(o.time))}\n`);
    },
  };
  const logger = pino({ level: options.level ?? 'info', base: undefined }, stream);
  return (r) => {
    const entry = {
      method: r.method,
      route: r.route,
      status: r.status,
      tokensIn: r.tokensIn,
      tokensOut: r.tokensOut,
      ms: Math.round(r.ms * 10) / 10,
    };
    if (r.status >= 500) logger.error(entry, 'request');
    else logger.info(entry, 'request');
  };
}
