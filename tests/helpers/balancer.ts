// An HTTP load balancer for tests with several coords, standing in for HAProxy or nginx in front of them (the
// shape docs/operations.md describes): each request goes to one backend, chosen per request; a backend that
// refuses the connection is skipped for the next one, so a SIGKILLed coord is failed over at once. `failover`
// tries the backends in order (the first one alive takes everything); `roundrobin` starts at the next one each
// time. Bodies are relayed as they are; responses are streamed back.
import { createServer, request, type IncomingMessage, type Server } from 'node:http';

export interface Balancer {
  url: string;
  /** Replaces the backend list (ports on 127.0.0.1), e.g. to choose which coord is primary. */
  setBackends(ports: number[]): void;
  /** Requests answered, per backend port. */
  served: Map<number, number>;
  close(): Promise<void>;
}

export async function startBalancer(mode: 'failover' | 'roundrobin', backends: number[]): Promise<Balancer> {
  let ports = [...backends];
  let next = 0;
  const served = new Map<number, number>();
  const forward = (req: IncomingMessage, body: Buffer, port: number): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const out = request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers, agent: false }, resolve);
      out.once('error', reject);
      out.end(body);
    });
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const order = mode === 'failover' ? ports : ports.map((_, i) => ports[(next + i) % ports.length]!);
        if (mode === 'roundrobin') next = (next + 1) % Math.max(1, ports.length);
        for (const port of order) {
          let upstream: IncomingMessage;
          try {
            upstream = await forward(req, body, port);
          } catch {
            continue; // refused (down): the next backend
          }
          served.set(port, (served.get(port) ?? 0) + 1);
          res.writeHead(upstream.statusCode ?? 502, upstream.headers);
          upstream.pipe(res);
          return;
        }
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'UNAVAILABLE', message: 'no backend answered', retryable: true } }));
      })();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    setBackends: (p) => {
      ports = [...p];
    },
    served,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
