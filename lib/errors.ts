// The closed set of error codes (native/DESIGN.md, "Typed errors cross the boundary") and one
// class per code. Native errors arrive as plain Errors with a `code`; fromNative() turns them into
// these classes.

export type ErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_BAD_CHECKPOINT'
  | 'ERR_UNSUPPORTED'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_CONTEXT_OVERFLOW'
  | 'ERR_DEVICE'
  | 'ERR_BUSY'
  | 'ERR_DISPOSED'
  | 'ERR_ABORTED'
  | 'ERR_NETWORK'
  | 'ERR_INTERNAL';

export class GptOssError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

export class InvalidArgumentError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARGUMENT', message, options);
  }
}

/** A checkpoint that cannot be used: names the file and, where one is at fault, the tensor. */
export class CheckpointError extends GptOssError {
  readonly file: string | undefined;
  readonly tensor: string | undefined;
  constructor(message: string, where: { file?: string; tensor?: string } = {}, options?: { cause?: unknown }) {
    const prefix = [where.file, where.tensor && `tensor ${where.tensor}`].filter(Boolean).join(': ');
    super('ERR_BAD_CHECKPOINT', prefix ? `${prefix}: ${message}` : message, options);
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

export class UnsupportedError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UNSUPPORTED', message, options);
  }
}

export class OutOfMemoryError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_OUT_OF_MEMORY', message, options);
  }
}

export class ContextOverflowError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONTEXT_OVERFLOW', message, options);
  }
}

export class DeviceError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_DEVICE', message, options);
  }
}

export class BusyError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BUSY', message, options);
  }
}

export class DisposedError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_DISPOSED', message, options);
  }
}

export class AbortedError extends GptOssError {
  constructor(message = 'the operation was aborted', options?: { cause?: unknown }) {
    super('ERR_ABORTED', message, options);
  }
}

/** A server could not be reached or broke off (the Hub for `pull`): `reason` is the system's
 * code (ENOTFOUND, ECONNREFUSED, ...) when there is one. */
export class NetworkError extends GptOssError {
  readonly reason: string | undefined;
  constructor(message: string, options?: { cause?: unknown; reason?: string }) {
    super('ERR_NETWORK', message, options);
    this.reason = options?.reason;
  }
}

/** A bug of ours, not the caller's: native code failed in a way it does not describe (an
 * exception that is not one of its typed errors). Worth a report. */
export class InternalError extends GptOssError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INTERNAL', message, options);
  }
}

const byCode: Record<
  Exclude<ErrorCode, 'ERR_BAD_CHECKPOINT'>,
  new (message: string, options?: { cause?: unknown }) => GptOssError
> = {
  ERR_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_UNSUPPORTED: UnsupportedError,
  ERR_OUT_OF_MEMORY: OutOfMemoryError,
  ERR_CONTEXT_OVERFLOW: ContextOverflowError,
  ERR_DEVICE: DeviceError,
  ERR_BUSY: BusyError,
  ERR_DISPOSED: DisposedError,
  ERR_ABORTED: AbortedError,
  ERR_NETWORK: NetworkError,
  ERR_INTERNAL: InternalError,
};

/**
 * Maps an error thrown by the addon to its typed class (a checkpoint error keeps the file and
 * tensor native code named); other values pass through unchanged. lib/backend/native.ts applies it to
 * everything the addon throws.
 */
export function fromNative(e: unknown): unknown {
  if (e instanceof GptOssError) return e;
  if (e instanceof Error && typeof (e as { code?: unknown }).code === 'string') {
    const n = e as Error & { code: string; file?: unknown; tensor?: unknown };
    if (n.code === 'ERR_BAD_CHECKPOINT') {
      const where = {
        file: typeof n.file === 'string' ? n.file : undefined,
        tensor: typeof n.tensor === 'string' ? n.tensor : undefined,
      };
      return new CheckpointError(e.message, where, { cause: e });
    }
    const Ctor = byCode[n.code as keyof typeof byCode];
    if (Ctor) return new Ctor(e.message, { cause: e });
  }
  return e;
}

/** Harmony text or tokens that do not follow the format (ERR_INVALID_ARGUMENT). */
export class HarmonyError extends InvalidArgumentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HarmonyError';
  }
}

/** The engine's queue is full: try again later (ERR_BUSY; an HTTP server answers 429/503). */
export class OverloadedError extends BusyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OverloadedError';
  }
}
