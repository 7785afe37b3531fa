// Mycelium SAL configuration: one daemon per node, its settings chosen by the operator. The API listens
// on loopback only; the daemon may run inside a network namespace.
import net from 'node:net';
import path from 'node:path';
import { assertSchema, compileSchema, WritError } from '@writ/protocol';

export interface MyceliumConfigInput {
  /** Absolute path of the mycelium binary. */
  binary: string;
  /** The node's overlay identity: 32 raw bytes (x25519 secret). */
  keyFile: string;
  /** Pid file, log, and the record of the identity this node has used. */
  stateDir: string;
  /** `127.0.0.1:8989` or `[::1]:8989`; loopback only. */
  apiAddr?: string;
  tunName?: string;
  noTun?: boolean;
  /** Peers every start connects to. */
  peers?: string[];
  tcpListenPort?: number;
  quicListenPort?: number;
  /** UDP port for link-local discovery; null disables discovery. */
  peerDiscoveryPort?: number | null;
  /** Run the daemon (and reach its API) inside this network namespace. */
  netns?: string;
  startTimeoutMs?: number;
  requestTimeoutMs?: number;
}

export type MyceliumConfig = Readonly<Required<Omit<MyceliumConfigInput, 'netns'>>> & { readonly netns: string | null };

const ENDPOINT = { type: 'string', maxLength: 64, pattern: '^(tcp|quic)://(\\d{1,3}(\\.\\d{1,3}){3}|\\[[0-9A-Fa-f:.]{2,45}\\]):\\d{1,5}$' };
const ABSOLUTE = { type: 'string', minLength: 2, maxLength: 4096, pattern: '^/' };
const PORT = { type: 'integer', minimum: 1, maximum: 65535 };
const validateConfig = compileSchema<MyceliumConfigInput>({
  type: 'object',
  additionalProperties: false,
  required: ['binary', 'keyFile', 'stateDir'],
  properties: {
    binary: ABSOLUTE,
    keyFile: ABSOLUTE,
    stateDir: ABSOLUTE,
    apiAddr: { type: 'string', maxLength: 64 },
    tunName: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,15}$' },
    noTun: { type: 'boolean' },
    peers: { type: 'array', maxItems: 64, items: ENDPOINT },
    tcpListenPort: PORT,
    quicListenPort: PORT,
    peerDiscoveryPort: { anyOf: [PORT, { type: 'null' }] },
    netns: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    startTimeoutMs: { type: 'integer', minimum: 100, maximum: 600_000 },
    requestTimeoutMs: { type: 'integer', minimum: 100, maximum: 600_000 },
  },
});

/** `host:port` or `[v6]:port` → parts, or null. */
export function parseSocketAddr(s: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (net.isIP(host) === 0 || port < 1 || port > 65535) return null;
  return { host, port };
}

function isLoopback(host: string): boolean {
  return host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Validates a peer endpoint beyond its schema pattern (a real IP, a real port); returns it unchanged. */
export function checkEndpoint(endpoint: string): string {
  const m = /^(tcp|quic):\/\/(.+)$/.exec(endpoint);
  if (!m || !parseSocketAddr(m[2] ?? ''))
    throw new WritError('SAL_INVALID_ARGUMENT', `peer endpoint ${JSON.stringify(endpoint)} must be tcp://IP:PORT or quic://IP:PORT`);
  return endpoint;
}

export function myceliumConfig(input: unknown): MyceliumConfig {
  assertSchema(validateConfig, input, 'mycelium config', 'CONFIG_INVALID');
  const apiAddr = input.apiAddr ?? '127.0.0.1:8989';
  const parsed = parseSocketAddr(apiAddr);
  if (!parsed || !isLoopback(parsed.host))
    throw new WritError('CONFIG_INVALID', `mycelium apiAddr ${JSON.stringify(apiAddr)} must be a loopback socket address (127.0.0.1:PORT or [::1]:PORT)`);
  for (const p of input.peers ?? []) checkEndpoint(p);
  return Object.freeze({
    binary: input.binary,
    keyFile: path.resolve(input.keyFile),
    stateDir: path.resolve(input.stateDir),
    apiAddr,
    tunName: input.tunName ?? 'mycelium',
    noTun: input.noTun ?? false,
    peers: Object.freeze([...(input.peers ?? [])]) as string[],
    tcpListenPort: input.tcpListenPort ?? 9651,
    quicListenPort: input.quicListenPort ?? 9651,
    peerDiscoveryPort: input.peerDiscoveryPort === undefined ? 9650 : input.peerDiscoveryPort,
    netns: input.netns ?? null,
    startTimeoutMs: input.startTimeoutMs ?? 15_000,
    requestTimeoutMs: input.requestTimeoutMs ?? 5_000,
  });
}

/**
 * The daemon's argv (binary first), without peers: what identifies "the same daemon" when start is
 * called again. Peers follow `--peers`, which takes every following value, so it goes last.
 */
export function daemonBaseArgv(config: MyceliumConfig): string[] {
  const argv = [
    config.binary,
    '--key-file',
    config.keyFile,
    '--api-addr',
    config.apiAddr,
    '--tcp-listen-port',
    String(config.tcpListenPort),
    '--quic-listen-port',
    String(config.quicListenPort),
  ];
  if (config.peerDiscoveryPort === null) argv.push('--disable-peer-discovery');
  else argv.push('--peer-discovery-port', String(config.peerDiscoveryPort));
  if (config.noTun) argv.push('--no-tun');
  else argv.push('--tun-name', config.tunName);
  return argv;
}
