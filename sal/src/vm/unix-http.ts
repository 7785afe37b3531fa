// JSON over HTTP/1.1 on a Unix socket: the transport of cloud-hypervisor's REST API. Any non-2xx answer is
// HYPERVISOR_API_ERROR carrying the API's array of error messages; a socket that does not answer is
// HYPERVISOR_UNREACHABLE.
import http from 'node:http';
import { WritError } from '@writ/protocol';

export interface UnixHttpResponse {
  status: number;
  body: unknown;
}

export async function unixRequest(socketPath: string, method: 'GET' | 'PUT', path: string, body: unknown, timeoutMs: number): Promise<UnixHttpResponse> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path,
        host: 'localhost',
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : { 'content-length': 0 },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(unreachable(socketPath, path, e)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = undefined;
          if (text.trim() !== '') {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => reject(unreachable(socketPath, path, e)));
    req.end(payload);
  });
}

function unreachable(socketPath: string, path: string, e: Error): WritError {
  const code = (e as NodeJS.ErrnoException).code ?? null;
  return new WritError('HYPERVISOR_UNREACHABLE', `hypervisor API at ${socketPath} did not answer ${path}: ${e.message}`, {
    socket: socketPath,
    path,
    errno: code,
  });
}

/** Turns a non-2xx answer into HYPERVISOR_API_ERROR, keeping the API's message array. */
export function expectSuccess(res: UnixHttpResponse, endpoint: string): unknown {
  if (res.status >= 200 && res.status < 300) return res.body;
  const messages = Array.isArray(res.body)
    ? res.body.map(String)
    : res.body === undefined
      ? []
      : [typeof res.body === 'string' ? res.body : JSON.stringify(res.body)];
  throw new WritError('HYPERVISOR_API_ERROR', `${endpoint} failed with HTTP ${res.status}${messages.length ? `: ${messages.join(': ')}` : ''}`, {
    endpoint,
    status: res.status,
    messages,
  });
}
