// The web dashboard (issue 13): static files served without a token, like /healthz. Everything it shows
// comes from the token-protected API, which the page calls with the token the operator types in (kept in
// memory only: no cookie, no storage, never in a URL; A2). No build step: the UI is plain ES modules using
// preact, its hooks and htm, read from node_modules when the coord starts and served as they are (the hooks
// module's bare `import "preact"` is pointed at the served copy, since a strict CSP rules out an import map).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ERROR_CODES, errorAnswer } from '@writ/protocol';

/** Listed in app.ts's ROUTES (snapshot-tested) and described in the OpenAPI document. */
export const DASHBOARD_ROUTES = ['GET /', 'GET /ui/:file'] as const;

/**
 * Sent with every dashboard file: scripts only from this origin (no inline script, no eval), API calls only
 * to this origin, no framing, no plugins, no forms posting elsewhere.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const UI_DIR = path.join(import.meta.dirname, 'ui');
const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.html': 'text/html; charset=utf-8',
};
const FILE = { type: 'string', pattern: '^[a-z0-9-]{1,40}\\.(js|css|svg)$' } as const;

/** The dashboard's paths need no token: the static files hold no data (the API they call does). */
export function isDashboardPath(urlPath: string): boolean {
  return urlPath === '/' || /^\/ui\/[^/]+$/.test(urlPath);
}

interface Asset {
  body: Buffer;
  type: string;
}

/** Reads the UI and the vendored libraries once; a missing file fails the coord's start, not a page load. */
export function loadDashboardAssets(): Map<string, Asset> {
  const require = createRequire(import.meta.url);
  const read = (file: string) => readFileSync(file, 'utf8').replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
  const assets = new Map<string, Asset>();
  const add = (name: string, text: string) => assets.set(name, { body: Buffer.from(text), type: TYPES[path.extname(name)]! });
  for (const name of ['index.html', 'app.js', 'api.js', 'views.js', 'dag.js', 'style.css', 'icon.svg']) add(name, read(path.join(UI_DIR, name)));
  add('preact.js', read(require.resolve('preact')));
  const hooks = read(require.resolve('preact/hooks'));
  const pointed = hooks.replace(/from\s*"preact"/g, 'from"./preact.js"');
  if (pointed === hooks || /from\s*"preact"/.test(pointed))
    throw new Error('preact/hooks no longer imports "preact" as expected: the dashboard cannot serve it');
  add('hooks.js', pointed);
  add('htm.js', read(path.join(path.dirname(require.resolve('htm')), 'htm.module.js')));
  return assets;
}

function send(reply: FastifyReply, asset: Asset) {
  return reply
    .header('content-type', asset.type)
    .header('content-security-policy', DASHBOARD_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header('cache-control', 'no-cache')
    .send(asset.body);
}

export function registerDashboardRoutes(app: FastifyInstance): void {
  const assets = loadDashboardAssets();
  const index = assets.get('index.html')!;
  const described = { tags: ['dashboard'], security: [] };
  app.get('/', { schema: { ...described, summary: 'The web dashboard (HTML; no token: it asks for one and keeps it in memory)' } }, async (_req, reply) =>
    send(reply, index),
  );
  app.get(
    '/ui/:file',
    { schema: { ...described, summary: "The dashboard's scripts and styles (no token)", params: { type: 'object', properties: { file: FILE } } } },
    async (req, reply) => {
      const { file } = req.params as { file: string };
      const asset = file === 'index.html' ? undefined : assets.get(file);
      if (!asset) {
        return reply
          .code(ERROR_CODES.ROUTE_NOT_FOUND.status)
          .header('x-content-type-options', 'nosniff')
          .send(errorAnswer('ROUTE_NOT_FOUND', `no dashboard file ${file}`));
      }
      return send(reply, asset);
    },
  );
}
