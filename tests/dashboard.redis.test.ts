// The web dashboard (issue 13) in a real browser against a real `writ dev --keep`: Debian's chromium driven
// by playwright-core. Each page renders from the API with a token typed into the sign-in form (kept in memory:
// no cookie, no storage, never in a URL); a job submitted during the test shows up in the jobs list and its
// page shows its log lines while it runs; a flow's DAG changes state live. Screenshots of each page go to
// docs/images/ (shown in docs/dashboard.md) when WRIT_UPDATE_SCREENSHOTS=1 or when one is missing there,
// otherwise to a temporary directory, so that `npm test` leaves the work tree as it was.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { runCli } from '@writ/cli';

const ROOT = path.resolve(import.meta.dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const isRoot = process.getuid?.() === 0;

/** Installs Debian's chromium when it is missing and we are root (as tools/setup.mjs does for `npm test`). */
function ensureChromium(): string | null {
  if (existsSync(CHROMIUM)) return null;
  if (!isRoot) return `${CHROMIUM} is missing and this is not root: install it with \`sudo apt-get install chromium\``;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'install', '-y', '--no-install-recommends', 'chromium'], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env,
    });
  if (install().status !== 0) {
    spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    install();
  }
  return existsSync(CHROMIUM) ? null : `apt-get could not install chromium (${CHROMIUM} is still missing)`;
}

const skipReason = ensureChromium();
if (skipReason) console.warn(`skipping the dashboard tests: ${skipReason}`);

const SHOTS = ['login', 'nodes', 'jobs', 'job', 'flows', 'flow', 'audit', 'keyset'] as const;
const docsImages = path.join(ROOT, 'docs/images');
const updateShots = process.env.WRIT_UPDATE_SCREENSHOTS === '1' || SHOTS.some((n) => !existsSync(path.join(docsImages, `dashboard-${n}.png`)));

let home: string;
let shotDir: string;
let dev: ChildProcess | undefined;
let devOut = '';
let url: string;
let token: string;
let browser: Browser | undefined;
let page: Page;
const requestUrls: string[] = [];
const problems: string[] = [];

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const env = { PATH: process.env.PATH ?? '', WRIT_HOME: home };
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l) }, { env, now: () => Math.floor(Date.now() / 1000) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function shot(name: (typeof SHOTS)[number]) {
  const file = path.join(shotDir, `dashboard-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  expect((await stat(file)).size).toBeGreaterThan(5_000);
}

beforeAll(async () => {
  if (skipReason) return;
  home = await mkdtemp(path.join(os.tmpdir(), 'writ-dashboard-'));
  shotDir = updateShots ? docsImages : path.join(home, 'images');
  await mkdir(shotDir, { recursive: true });
  // `writ dev --keep` as a newcomer runs it: its own redis-server and PGlite ledger, a free port.
  const env: NodeJS.ProcessEnv = { ...process.env, WRIT_HOME: home };
  for (const k of ['REDIS_URL', 'DATABASE_URL', 'WRIT_TOKEN', 'WRIT_COORD']) delete env[k];
  dev = spawn(process.execPath, [path.join(ROOT, 'bin/writ.mjs'), 'dev', '--keep', '--port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  dev.stdout!.on('data', (d: Buffer) => (devOut += d.toString()));
  dev.stderr!.on('data', (d: Buffer) => (devOut += d.toString()));
  await waitFor(
    'writ dev to come up',
    () => {
      if (dev!.exitCode !== null) throw new Error(`writ dev exited with ${dev!.exitCode}:\n${devOut}`);
      return devOut.includes('writ dev is up') ? true : undefined;
    },
    150_000,
  );
  const recorded = JSON.parse(await readFile(path.join(home, 'dev.json'), 'utf8')) as { url: string; token: string };
  url = recorded.url;
  token = recorded.token;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('request', (r) => requestUrls.push(r.url()));
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/the server responded with a status of 401/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
}, 240_000);

afterAll(async () => {
  await browser?.close();
  if (dev && dev.exitCode === null) {
    dev.kill('SIGTERM');
    await waitFor('writ dev to stop', () => (dev!.exitCode !== null || dev!.signalCode !== null ? true : undefined), 30_000).catch(() => dev!.kill('SIGKILL'));
  }
  if (home) await rm(home, { recursive: true, force: true });
}, 60_000);

describe.skipIf(skipReason !== null)('the dashboard against writ dev', () => {
  it('serves its files without a token, with a strict CSP and nosniff, while the API still wants the token', async () => {
    for (const p of ['/', '/ui/app.js', '/ui/preact.js', '/ui/hooks.js', '/ui/htm.js', '/ui/style.css']) {
      const res = await fetch(`${url}${p}`);
      expect(res.status, p).toBe(200);
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("default-src 'none'");
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('set-cookie')).toBeNull();
      const body = await res.text();
      if (p === '/') expect(body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
      if (p === '/ui/hooks.js') expect(body).toContain('from"./preact.js"');
    }
    expect((await fetch(`${url}/ui/secret.js`)).status).toBe(404);
    expect((await fetch(`${url}/v1/nodes`)).status).toBe(401);
  });

  it('asks for the token, refuses a wrong one, and keeps the right one in memory only', async () => {
    await page.goto(`${url}/`);
    await page.locator('input[name=token]').fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'UNAUTHENTICATED' }).waitFor();
    await page.locator('input[name=token]').fill('');
    await shot('login');
    await page.locator('input[name=token]').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('nav a[data-nav=nodes].active').waitFor();
    expect(await page.context().cookies()).toEqual([]);
    // Evaluated in the page (a string: this file is type-checked without the DOM's types).
    expect(await page.evaluate('[localStorage.length, sessionStorage.length]')).toEqual([0, 0]);
    // A reload forgets it: the sign-in form again.
    await page.reload();
    await page.locator('input[name=token]').waitFor();
    await page.locator('input[name=token]').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('header nav').waitFor();
  });

  it('nodes: dev-1 under "active", with its inventory and a recent heartbeat', async () => {
    await page.goto(`${url}/#/nodes`);
    const row = page.locator('section[data-state=active] tr[data-node=dev-1]');
    await row.waitFor();
    await expect.poll(() => row.locator('td.inv').innerText()).toMatch(/\d+ threads.*memory/);
    await expect.poll(() => row.locator('td.heartbeat').innerText()).toMatch(/^\d+ s ago$/);
    await expect.poll(() => row.innerText()).toContain('env=dev');
    await shot('nodes');
  });

  it('jobs: a job submitted now appears in the list, and its page shows its log lines while it runs', async () => {
    await page.goto(`${url}/#/jobs`);
    await page.locator('main[data-page=jobs] h1').waitFor();
    const script = path.join(home, 'watch.js');
    await writeFile(
      script,
      `export default async function watch(args, ctx) {
  const facts = await ctx.sal.host.facts();
  ctx.log.info(\`hello from \${facts.hostname}: \${facts.cpu.threads} threads\`);
  ctx.log.info('holding for ' + args.holdMs + ' ms so that the dashboard shows this job running');
  await ctx.sal.time.sleep({ ms: args.holdMs });
  ctx.log.info('done waiting');
  return { hostname: facts.hostname, threads: facts.cpu.threads, heldMs: args.holdMs };
}
`,
    );
    const sub = await cli('submit', script, '--target', 'node=dev-1', '--caps', 'host.facts,time.sleep', '--args', '{"holdMs":10000}', '--timeout', '60s');
    expect(sub.code, sub.err).toBe(0);
    const id = /job (\S+) accepted/.exec(sub.out)?.[1];
    expect(id, sub.out).toBeTruthy();
    // The list polls: the row comes without a reload.
    const row = page.locator(`tr[data-job="${id}"]`);
    await row.waitFor();
    await row.getByRole('link', { name: id }).click();
    await page.locator(`main[data-page=jobs] h1:has-text("${id}")`).waitFor();
    // Live: the first line is shown while the job still holds, before its last line exists.
    await page.locator('ol.log li', { hasText: 'holding for 10000 ms' }).waitFor();
    await page.locator('h1 .badge[data-status=running]').waitFor();
    expect(await page.locator('ol.log li', { hasText: 'done waiting' }).count()).toBe(0);
    await page.locator('ol.log li', { hasText: 'done waiting' }).waitFor({ timeout: 40_000 });
    await page.locator('h1 .badge[data-status=succeeded]').waitFor();
    await page.locator('table.attempts tbody tr').first().waitFor();
    expect(await page.locator('table.attempts tbody tr').count()).toBe(1);
    await page.locator('.result pre', { hasText: '"heldMs": 10000' }).waitFor();
    await shot('job');
    // Back to the list, filtered: the job is there as succeeded, and a filter that excludes it hides it.
    await page.goto(`${url}/#/jobs?status=succeeded`);
    await page.locator(`tr[data-job="${id}"] .badge[data-status=succeeded]`).waitFor();
    await page.locator('select[name=status]').selectOption('failed');
    await page.waitForURL(/#\/jobs\?status=failed$/);
    await expect.poll(() => page.locator(`tr[data-job="${id}"]`).count()).toBe(0);
    await page.locator('select[name=status]').selectOption('');
    await page.locator(`tr[data-job="${id}"]`).waitFor();
    await shot('jobs');
  }, 90_000);

  it('flows: a flow run now appears, and its DAG moves through its step states live', async () => {
    await page.goto(`${url}/#/flows`);
    await page.locator('main[data-page=flows] h1').waitFor();
    const dir = path.join(home, 'flow');
    await mkdir(dir, { recursive: true });
    await writeFile(
      path.join(dir, 'step.js'),
      `export default async function step(args, ctx) {
  ctx.log.info(args.say);
  await ctx.sal.time.sleep({ ms: args.holdMs });
  return { said: args.say };
}
`,
    );
    const step = (name: string, holdMs: number, depends: string[] = []) => ({
      name,
      script: 'step.js',
      target: { node: 'dev-1' },
      caps: ['time.sleep'],
      args: { say: `${name} on dev-1`, holdMs },
      ...(depends.length ? { depends } : {}),
    });
    await writeFile(
      path.join(dir, 'flow.json'),
      JSON.stringify(
        {
          id: 'dashboard-demo',
          steps: [step('fetch', 8000), step('build-a', 300, ['fetch']), step('build-b', 300, ['fetch']), step('publish', 300, ['build-a', 'build-b'])],
        },
        null,
        2,
      ),
    );
    const signed = await cli('flow', 'sign', path.join(dir, 'flow.json'), '--out', path.join(dir, 'flow.env.json'));
    expect(signed.code, signed.err).toBe(0);
    const run = await cli('flow', 'run', path.join(dir, 'flow.env.json'));
    expect(run.code, run.err).toBe(0);
    const row = page.locator('tr[data-flow=dashboard-demo]');
    await row.waitFor();
    await row.getByRole('link', { name: 'dashboard-demo' }).click();
    const box = (name: string) => page.locator(`svg.dag g[data-step="${name}"]`);
    await box('fetch').waitFor();
    // Three columns (fetch | build-a, build-b | publish) joined by four edges.
    expect(await page.locator('svg.dag g.step').count()).toBe(4);
    expect(await page.locator('svg.dag path.edge').count()).toBe(4);
    const x = async (name: string) => Number(/translate\(([\d.]+),/.exec((await box(name).getAttribute('transform')) ?? '')?.[1]);
    expect(await x('fetch')).toBeLessThan(await x('build-a'));
    expect(await x('build-a')).toBe(await x('build-b'));
    expect(await x('build-b')).toBeLessThan(await x('publish'));
    // Live: fetch is seen running (it holds 8 s) while publish still waits, then everything succeeds.
    await page.locator('svg.dag g[data-step="fetch"][data-status=running]').waitFor();
    expect(await box('publish').getAttribute('data-status')).toBe('pending');
    await page.locator('svg.dag g[data-step="publish"][data-status=succeeded]').waitFor({ timeout: 60_000 });
    await page.locator('h1 .badge[data-status=succeeded]').waitFor();
    await page.locator('ol.log li', { hasText: 'publish on dev-1' }).waitFor();
    for (const name of ['fetch', 'build-a', 'build-b', 'publish']) expect(await box(name).getAttribute('data-status')).toBe('succeeded');
    await shot('flow');
    await page.goto(`${url}/#/flows`);
    await page.locator('tr[data-flow=dashboard-demo] .badge[data-status=succeeded]').waitFor();
    await shot('flows');
  }, 90_000);

  it('audit: the log with its verified hash chain', async () => {
    await page.goto(`${url}/#/audit`);
    await page.locator('.verify[data-verified=true]').waitFor();
    const verify = (await (await fetch(`${url}/v1/audit/verify`, { headers: { authorization: `Bearer ${token}` } })).json()) as { ok: boolean; count: number };
    expect(verify.ok).toBe(true);
    await expect.poll(() => page.locator('.verify').innerText()).toContain(`${verify.count} entries`);
    await expect.poll(() => page.locator('table.audit tbody tr').count()).toBeGreaterThan(3);
    await shot('audit');
  });

  it('key set: the one in force, with its version, expiry, users, roles and thresholds', async () => {
    const { keySet } = (await (await fetch(`${url}/v1/keyset`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      keySet: { version: number; expiresAt: number; users: { name: string }[]; roles: { name: string }[] };
    };
    await page.goto(`${url}/#/keyset`);
    await page.locator(`dd[data-version="${keySet.version}"]`).waitFor();
    await expect.poll(() => page.locator('dl.facts').innerText()).toContain(new Date(keySet.expiresAt * 1000).toISOString());
    for (const u of keySet.users) await page.locator(`tr[data-user="${u.name}"]`).waitFor();
    for (const r of keySet.roles) await page.locator(`tr[data-role="${r.name}"]`).waitFor();
    expect(keySet.users.length).toBeGreaterThan(0);
    await page.getByRole('heading', { name: /Thresholds/ }).waitFor();
    await shot('keyset');
  });

  it('never put the token in a URL, and met no script error or CSP refusal', () => {
    expect(requestUrls.length).toBeGreaterThan(10);
    expect(requestUrls.filter((u) => u.includes(token))).toEqual([]);
    expect(problems).toEqual([]);
  });
});
