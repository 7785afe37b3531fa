// What the coord's and the supervisor's HTTP servers share against hostile clients (A3): header and body
// timeouts, framework and parser errors answered in Writ's {error:{code,message}} shape, NUL bytes and
// non-UTF-8 JSON refused with a code. The code owner is here because the coord depends on this package.
import type { ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import { ERROR_CODES, WritError, errorAnswer, type ErrorCode } from '@writ/protocol';

export interface HttpGuardOptions {
  /** The whole request (headers and body) must arrive within this; a slow body is cut off with 408. Default 30 s. */
  requestTimeoutMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

function writErrorBody(code: ErrorCode, message: string): string {
  return JSON.stringify(errorAnswer(code, message));
}

/**
 * Errors node's HTTP parser meets before fastify sees a request (a malformed request line, a header block
 * too large, a request that did not arrive in time): answered on the raw socket in Writ's shape, then closed.
 */
function answerClientError(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? ([408, 'REQUEST_TIMEOUT', 'the request (headers and body) did not arrive in time'] as const)
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? ([431, 'HEADERS_TOO_LARGE', 'the request line and headers are larger than allowed'] as const)
        : ([400, 'BAD_REQUEST', `the request is not valid HTTP (${err.code ?? 'parse error'})`] as const);
  const body = writErrorBody(code, message);
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${ERROR_CODES[code].message}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** Fastify's router errors (a malformed % escape, a path parameter beyond its length) in Writ's shape. */
function answerFrameworkError(err: Error & { code?: string }, _req: FastifyRequest, reply: FastifyReply): void {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') void reply.code(414).send(errorAnswer('URI_TOO_LONG', 'a path segment is longer than allowed'));
  else if (err.code === 'FST_ERR_BAD_URL') void reply.code(400).send(errorAnswer('BAD_REQUEST', 'the path holds a malformed %-escape'));
  else void reply.code(400).send(errorAnswer('BAD_REQUEST', 'the request is malformed'));
}

/** Server options every Writ HTTP service is built with. */
export function guardedServerOptions(opts: HttpGuardOptions = {}): {
  requestTimeout: number;
  http: ServerOptions;
  clientErrorHandler: NonNullable<FastifyServerOptions['clientErrorHandler']>;
  frameworkErrors: NonNullable<FastifyServerOptions['frameworkErrors']>;
} {
  const requestTimeout = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  return {
    // Node checks for requests past their time only every connectionsCheckingInterval (30 s by default).
    requestTimeout,
    http: { requestTimeout, headersTimeout: Math.min(requestTimeout, 20_000), connectionsCheckingInterval: Math.min(1000, requestTimeout) },
    clientErrorHandler: answerClientError,
    frameworkErrors: answerFrameworkError,
  };
}

/** Refuses a NUL byte anywhere in the path or query (it would reach the ledger, which cannot store it). */
export function installRequestGuards(app: FastifyInstance): void {
  app.addHook('onRequest', async (req, reply) => {
    if (/%00|\0/i.test(req.url)) return reply.code(400).send(errorAnswer('BAD_REQUEST', 'the path or query holds a NUL byte (%00)'));
  });
}

/** A JSON body must be UTF-8: a declared other charset is refused (415), never parsed as if it were UTF-8. */
export function checkJsonCharset(contentType: string | undefined): void {
  const m = /;\s*charset\s*=\s*"?([^";\s]*)"?/i.exec(contentType ?? '');
  if (m && !/^utf-?8$/i.test(m[1]!)) {
    throw new WritError('UNSUPPORTED_MEDIA_TYPE', `JSON bodies are UTF-8; send Content-Type: application/json (got charset ${JSON.stringify(m[1])})`);
  }
}
