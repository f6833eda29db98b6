// Option checking shared by the public entry points: unknown keys are refused with the likely
// intended one, and values are checked with messages naming the option, what it must be, and
// what was received (the habit of sharp's lib/is.js).
import { suggest } from './checkpoint/config.js';
import { InvalidArgumentError } from './errors.js';

export function checkKeys(options: object | undefined, known: readonly string[], where: string): void {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError(`${where}: options must be an object`);
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const hint = suggest(key, known);
    throw new InvalidArgumentError(`${where}: unknown option "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}`);
  }
}

export function checkOneOf<T extends string>(value: unknown, allowed: readonly T[], name: string, fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !allowed.includes(value as T))
    throw new InvalidArgumentError(
      `${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`,
    );
  return value as T;
}

export function checkInt(
  value: unknown,
  name: string,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max)
    throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
  return value as number;
}
