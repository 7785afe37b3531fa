// Client for mycelium's HTTP management API (paths and bodies as published in mycelium-api.yaml; the
// add-peer body `{endpoint}` is not in the yaml and follows myceliumd's source). Inside a network
// namespace the API is only reachable from that namespace, so requests go through `ip netns exec … curl`.
import { WritError } from '@writ/protocol';
import { run } from '../exec.ts';
import type { MyceliumConfig } from './config.ts';

/** Every API path this SAL uses; a test checks each against the published yaml. */
export const MYCELIUM_API = Object.freeze({
  info: { method: 'GET', path: '/api/v1/admin' },
  peers: { method: 'GET', path: '/api/v1/admin/peers' },
  addPeer: { method: 'POST', path: '/api/v1/admin/peers' },
  removePeer: { method: 'DELETE', path: '/api/v1/admin/peers/{endpoint}' },
  selectedRoutes: { method: 'GET', path: '/api/v1/admin/routes/selected' },
  fallbackRoutes: { method: 'GET', path: '/api/v1/admin/routes/fallback' },
} as const);

export interface MyceliumInfo {
  nodeSubnet: string;
  nodeIp: string;
  nodePubkey: string;
  nodeStartTime?: number;
}
export interface MyceliumPeer {
  endpoint: { proto: 'tcp' | 'quic'; socketAddr: string };
  type: 'static' | 'inbound' | 'linkLocalDiscovery';
  connectionState: 'alive' | 'connecting' | 'dead';
  txBytes: number;
  rxBytes: number;
}
export interface MyceliumRoute {
  subnet: string;
  nextHop: string;
  metric: number | 'infinite';
  seqno: number;
}

interface RawResponse {
  status: number;
  body: string;
}

// curl exit codes that mean "nothing answered" (could not connect, timed out, empty reply, recv error).
const CURL_UNREACHABLE = new Set([7, 28, 52, 56]);

async function viaNetns(config: MyceliumConfig, method: string, url: string, body: string | undefined): Promise<RawResponse> {
  const seconds = String(Math.max(1, Math.ceil(config.requestTimeoutMs / 1000)));
  const argv = ['ip', 'netns', 'exec', config.netns ?? '', 'curl', '-sS', '-X', method, '--max-time', seconds, '-o', '-', '-w', '\n%{http_code}'];
  if (body !== undefined) argv.push('-H', 'content-type: application/json', '--data-binary', '@-');
  argv.push(url);
  const r = await run(argv, { input: body ?? '', reject: false, timeoutMs: config.requestTimeoutMs + 5_000 });
  if (r.exitCode !== 0) {
    const code = CURL_UNREACHABLE.has(r.exitCode) || r.exitCode === -1 ? 'MYCELIUM_UNREACHABLE' : 'COMMAND_FAILED';
    throw new WritError(code, `mycelium API at ${config.apiAddr} in netns ${config.netns} did not answer: ${r.stderr.trim().slice(0, 300)}`, {
      netns: config.netns,
      exitCode: r.exitCode,
    });
  }
  const nl = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
}

async function direct(config: MyceliumConfig, method: string, url: string, body: string | undefined): Promise<RawResponse> {
  try {
    const res = await fetch(url, {
      method,
      headers: body !== undefined ? { 'content-type': 'application/json' } : {},
      body,
      signal: AbortSignal.timeout(config.requestTimeoutMs),
    });
    return { status: res.status, body: await res.text() };
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
    throw new WritError('MYCELIUM_UNREACHABLE', `mycelium API at ${config.apiAddr} did not answer (${cause})`, { apiAddr: config.apiAddr, cause });
  }
}

/**
 * One API call. Statuses in `tolerated` are returned to the caller (e.g. 409 on add = already there);
 * any other non-2xx is MYCELIUM_API_ERROR carrying the body.
 */
export async function myceliumRequest(config: MyceliumConfig, method: string, apiPath: string, body?: unknown, tolerated: number[] = []): Promise<RawResponse> {
  const url = `http://${config.apiAddr}${apiPath}`;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const res = config.netns ? await viaNetns(config, method, url, payload) : await direct(config, method, url, payload);
  if ((res.status >= 200 && res.status < 300) || tolerated.includes(res.status)) return res;
  throw new WritError('MYCELIUM_API_ERROR', `mycelium API ${method} ${apiPath} answered ${res.status}${res.body ? `: ${res.body.slice(0, 300)}` : ''}`, {
    method,
    path: apiPath,
    status: res.status,
    body: res.body.slice(0, 4000),
  });
}

export async function myceliumJson<T>(config: MyceliumConfig, method: string, apiPath: string): Promise<T> {
  const res = await myceliumRequest(config, method, apiPath);
  try {
    return JSON.parse(res.body) as T;
  } catch {
    throw new WritError('MYCELIUM_API_ERROR', `mycelium API ${method} ${apiPath} answered ${res.status} with a body that is not JSON`, {
      method,
      path: apiPath,
      status: res.status,
      body: res.body.slice(0, 4000),
    });
  }
}
