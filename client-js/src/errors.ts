import type { ConnectErrorCode, ErrorCode, RoomId } from "./protocol.js";

/**
 * Codes the SDK itself produces (they never come from the server):
 *
 * - `timeout`: no acknowledgement arrived within `ackTimeout` (for `send`/`dm`: on the last of `1 + retries`
 *   attempts). For a send, the message may or may not be stored; calling `send` again with the same `clientId`
 *   is safe and returns the stored message if there is one.
 * - `disconnected`: the connection ended for good while the call was waiting (`close()`, `socket.disconnect()`,
 *   the server's disconnect, or socket.io-client giving up reconnecting), or the call was made after that; or,
 *   for the helpers that are not resent (all but `send`/`dm`), the connection dropped before the ack arrived.
 * - `invalid_namespace`: `connect_error` "Invalid namespace": the server does not serve this namespace.
 * - `connect_failed`: any other `connect_error` (network, transport, CORS…); socket.io-client keeps retrying.
 */
export type ClientErrorCode = "timeout" | "disconnected" | "invalid_namespace" | "connect_failed";

/** Every `code` a {@link PalaverError} can carry. */
export type PalaverErrorCode = ErrorCode | ConnectErrorCode | ClientErrorCode;

export interface PalaverErrorOptions {
  /** The client → server event that failed, for errors about a call. */
  event?: string;
  /** The room concerned, for errors of the catch-up (`onRecoveryError`). */
  room?: RoomId;
  /** The underlying error (a socket.io-client `Error`, for `connect_error`, timeouts and disconnections). */
  cause?: unknown;
}

/**
 * The error every SDK promise rejects with, and the one `onConnectError` handlers get.
 *
 * - an error ack `{ ok: false, error: { code, message } }` becomes `code` (an {@link ErrorCode}) and `message`;
 * - a refused connection (`"unauthorized: <code>: <why>"`) becomes `code` (a {@link ConnectErrorCode}) and
 *   `message` = `<why>`;
 * - the SDK's own failures use a {@link ClientErrorCode}.
 */
export class PalaverError extends Error {
  readonly code: PalaverErrorCode;
  readonly event?: string;
  readonly room?: RoomId;

  constructor(code: PalaverErrorCode, message: string, options: PalaverErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PalaverError";
    this.code = code;
    if (options.event !== undefined) this.event = options.event;
    if (options.room !== undefined) this.room = options.room;
  }
}

/** `err instanceof PalaverError`, optionally with one of `codes`. */
export function isPalaverError(err: unknown, ...codes: PalaverErrorCode[]): err is PalaverError {
  return err instanceof PalaverError && (codes.length === 0 || codes.includes(err.code));
}

const UNAUTHORIZED = /^unauthorized: ([a-z_]+): (.*)$/s;

/**
 * Turns a socket.io-client `connect_error` into a {@link PalaverError}:
 * `"unauthorized: expired: token expired"` → `{ code: "expired", message: "token expired" }`,
 * `"Invalid namespace"` → `invalid_namespace`, anything else → `connect_failed` (same message).
 */
export function parseConnectError(err: unknown): PalaverError {
  const message = err instanceof Error ? err.message : String(err);
  const m = UNAUTHORIZED.exec(message);
  if (m) return new PalaverError(m[1] as ConnectErrorCode, m[2] ?? "", { cause: err });
  if (message.startsWith("unauthorized")) {
    const why = message.slice("unauthorized".length).replace(/^:\s*/, "");
    return new PalaverError("unauthorized", why || message, { cause: err });
  }
  if (message === "Invalid namespace") return new PalaverError("invalid_namespace", message, { cause: err });
  return new PalaverError("connect_failed", message, { cause: err });
}

/** Maps the errors of socket.io-client's `emitWithAck` (timeout, disconnection) to a {@link PalaverError}. */
export function ackFailure(err: unknown, event: string, ms: number): PalaverError {
  if (err instanceof PalaverError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (message === "socket has been disconnected") {
    return new PalaverError("disconnected", `${event}: the connection was lost before the ack arrived`, { event, cause: err });
  }
  return new PalaverError("timeout", `${event}: no ack within ${ms} ms`, { event, cause: err });
}
