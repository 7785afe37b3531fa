// The iPXE boot path (issue 11): what a machine's firmware asks the coord before anything of Writ runs on it.
// GET /boot/ipxe?mac=… answers an iPXE script for that machine: a short menu whose default is the ledger's
// answer (local, install or rescue); GET /boot/vmlinuz and /boot/initramfs.img serve the image folder that
// `writ image build|ipxe` wrote ($WRIT_BOOT_IMAGE), each file checked against the folder's manifest.json.
//
// These routes carry no token: firmware cannot send one. What they reveal is what the image itself carries —
// its kernel command line (coord URL, Redis URL, the pinned admin *public* keys and the enrollment token, the
// same words the USB image's UKI holds) — and which answer a MAC gets. No node ids, inventories or states.
// docs/boot.md says what serving the token this way means.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { WritError, type JsonValue } from '@writ/protocol';
import type { Queryable } from '../ledger/db.ts';
import type { NodeRecord, NodeRegistry } from '../nodes/registry.ts';
import { clearBootAnswers, getBootAnswer, listBootAnswers, nodesWithMac, setBootAnswer, type BootAnswer, type BootAnswerRow } from './store.ts';

export const BOOT_ROUTES = ['GET /boot/ipxe', 'GET /boot/vmlinuz', 'GET /boot/initramfs.img'] as const;
/** The paths app.ts lets through without a token. */
export const BOOT_PATHS: readonly string[] = BOOT_ROUTES.map((r) => r.slice('GET '.length));

/**
 * The kernel command line word that tells a netbooted node why it was booted (`writ.boot=install|enroll|rescue`);
 * efi-image/src/boot-config.ts reads it (tests/boot-ipxe.redis.test.ts checks that both sides agree).
 */
export const BOOT_MODE_WORD = 'writ.boot';
/** How long the per-machine menu waits for a person at the console before it takes the ledger's answer. */
export const MENU_TIMEOUT_MS = 3000;

/** Operator actions that change what a machine's next iPXE boot does (app.ts calls bootAnswerAfterAction). */
const ACTION_ANSWERS: Readonly<Partial<Record<string, BootAnswer>>> = Object.freeze({
  install: 'install',
  reprovision: 'install',
  rescue: 'rescue',
  unrescue: 'local',
});
/** Operator actions that cancel an answer still pending (the machine's default applies again). */
const CLEARING_ACTIONS: ReadonlySet<string> = new Set(['accept', 'reject', 'retire']);

const MAC_FORMS = [/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i, /^[0-9a-f]{2}(-[0-9a-f]{2}){5}$/i, /^[0-9a-f]{12}$/i];

/** A MAC as iPXE sends it (`${net0/mac}`, or its `:hexhyp`/`:hexraw` forms), normalised to lower-case colon form. */
export function parseMac(v: unknown): string {
  if (typeof v !== 'string' || !MAC_FORMS.some((re) => re.test(v))) {
    const given = v === undefined ? 'nothing' : JSON.stringify(String(v).slice(0, 40));
    throw new WritError('BAD_REQUEST', `mac must be a MAC address, six hex bytes separated by ':' or '-' (in an iPXE script: mac=\${net0/mac}); got ${given}`, {
      field: 'mac',
    });
  }
  const hex = v.toLowerCase().replace(/[:-]/g, '');
  return hex.match(/../g)!.join(':');
}

/** The MACs a node's inventory lists (the NICs it reported when it registered). */
export function macsOf(inventory: JsonValue | undefined): string[] {
  const nics = (inventory as { nics?: unknown } | null)?.nics;
  if (!Array.isArray(nics)) return [];
  const macs = new Set<string>();
  for (const n of nics) {
    const mac = (n as { mac?: unknown } | null)?.mac;
    if (typeof mac === 'string' && MAC_FORMS[0]!.test(mac) && mac !== '00:00:00:00:00:00') macs.add(mac.toLowerCase());
  }
  return [...macs].sort();
}

// ---------------------------------------------------------------------------------------------- the image

export interface BootImageFile {
  file: string;
  bytes: number;
  sha256: string;
}

export interface BootImage {
  dir: string;
  cmdline: string;
  kernel: BootImageFile;
  initramfs: BootImageFile;
}

/**
 * The image folder the coord serves: the one it was started with (`writ coord|dev --boot-image DIR`), else
 * $WRIT_BOOT_IMAGE (read at each request, so no restart is needed).
 */
export function bootImageDir(configured: string | null = null, env: NodeJS.ProcessEnv = process.env): string | null {
  return configured ?? (env.WRIT_BOOT_IMAGE?.trim() || null);
}

/** Files already hashed, by path: hashed again only when their size or mtime changes. */
const verified = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1048576 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

function badImage(dir: string, msg: string): never {
  throw new WritError('CONFIG_INVALID', `boot image ${dir} (--boot-image or WRIT_BOOT_IMAGE): ${msg}`);
}

async function checkFile(dir: string, a: BootImageFile): Promise<void> {
  const file = path.join(dir, a.file);
  let st;
  try {
    st = await stat(file);
  } catch {
    badImage(dir, `${a.file} is missing (rebuild the image with writ image ipxe)`);
  }
  const seen = verified.get(file);
  if (seen && seen.size === st.size && seen.mtimeMs === st.mtimeMs && seen.sha256 === a.sha256) return;
  const sha = await sha256File(file);
  if (sha !== a.sha256 || st.size !== a.bytes)
    badImage(dir, `${a.file} has sha256 ${sha} (${st.size} bytes); manifest.json says ${a.sha256} (${a.bytes} bytes): rebuild the image with writ image ipxe`);
  verified.set(file, { size: st.size, mtimeMs: st.mtimeMs, sha256: sha });
}

/** Reads the folder's manifest and checks the kernel and initramfs against its sha256s. */
export async function loadBootImage(dir: string): Promise<BootImage> {
  let m: { image?: unknown; cmdline?: unknown; artifacts?: Record<string, Partial<BootImageFile>> };
  try {
    m = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8'));
  } catch (e) {
    badImage(dir, `no readable manifest.json (${(e as Error).message}); point --boot-image (or WRIT_BOOT_IMAGE) at a folder writ image ipxe wrote`);
  }
  if (m?.image !== 'writ-node' || typeof m.cmdline !== 'string') badImage(dir, 'manifest.json is not a Writ node image manifest');
  // The command line goes into an iPXE script line: no line breaks, and no `${`, which iPXE would expand.
  if (/[\u0000-\u001f\u007f]/.test(m.cmdline) || m.cmdline.includes('${'))
    badImage(dir, 'the kernel command line holds control characters or "${", which an iPXE script cannot carry');
  const artifact = (name: string): BootImageFile => {
    const a = m.artifacts?.[name];
    if (
      !a ||
      typeof a.file !== 'string' ||
      a.file.includes('/') ||
      a.file.startsWith('.') ||
      typeof a.bytes !== 'number' ||
      typeof a.sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(a.sha256)
    )
      badImage(dir, `manifest.json has no valid ${name} artifact`);
    return { file: a.file, bytes: a.bytes, sha256: a.sha256 };
  };
  const image: BootImage = { dir, cmdline: m.cmdline, kernel: artifact('kernel'), initramfs: artifact('initramfs') };
  await checkFile(dir, image.kernel);
  await checkFile(dir, image.initramfs);
  return image;
}

async function configuredImage(configured: string | null): Promise<BootImage> {
  const dir = bootImageDir(configured);
  if (!dir)
    throw new WritError(
      'NOT_READY',
      'this coord serves no boot image: build one with writ image ipxe --out DIR … and start the coord with --boot-image DIR (or WRIT_BOOT_IMAGE=DIR)',
    );
  return loadBootImage(dir);
}

// ---------------------------------------------------------------------------------------------- answers

export interface MachineAnswer {
  answer: BootAnswer;
  /** Why, in words shown on the machine's console (nothing secret: no node id). */
  reason: string;
  /** The ledger's row, when an operator action set one. */
  row: BootAnswerRow | null;
}

/**
 * What a machine with this MAC boots: the answer an operator action set for it; else `local` when a
 * registered node (not retired) has this MAC; else `install`, so an unknown machine boots the node image and
 * enrols (a rule or an operator decides what it becomes).
 */
export async function answerFor(db: Queryable, mac: string): Promise<MachineAnswer> {
  const row = await getBootAnswer(db, mac);
  if (row) return { answer: row.answer, reason: `set by ${row.setBy.replace(/:.*/, '')} ${new Date(row.setAt).toISOString()}`, row };
  if ((await nodesWithMac(db, mac)).length > 0) return { answer: 'local', reason: 'a registered node has this MAC', row: null };
  return { answer: 'install', reason: 'an unknown machine: the node image enrols it', row: null };
}

/** The iPXE script for one machine: a menu (default: the answer) and the three ways to boot. */
export function ipxeAnswerScript(o: { mac: string; answer: MachineAnswer; image: BootImage | null; menuTimeoutMs?: number }): string {
  const { mac, image } = o;
  const { answer, reason } = o.answer;
  // Only an install an operator ordered for a known node (its answer row names the node) lets the node's
  // install plan wipe the plan's disk; an unknown machine netboots to enrol (writ.boot=enroll), and its plan
  // installs only to a blank disk.
  const ordered = o.answer.row?.nodeId ? true : false;
  const netboot = (mode: 'install' | 'rescue') =>
    image
      ? [
          `:${mode}`,
          'imgfree',
          `echo Writ: fetching the node image (${mode}); kernel sha256 ${image.kernel.sha256}, initramfs sha256 ${image.initramfs.sha256}`,
          `kernel /boot/vmlinuz initrd=initramfs.img ${image.cmdline} ${BOOT_MODE_WORD}=${mode === 'install' && !ordered ? 'enroll' : mode} || goto failed`,
          'initrd /boot/initramfs.img || goto failed',
          // Lists what was fetched, with sizes, on the console (and in the tests' console logs).
          'imgstat',
          'boot || goto failed',
        ]
      : [];
  return [
    '#!ipxe',
    `# Writ: the coord's boot answer for ${mac}`,
    `echo Writ: ${mac} boots ${answer} (${reason})`,
    `menu Writ node boot for ${mac}: the coord says ${answer}`,
    ...(image ? ['item install Boot the Writ node image (install and enrol)', 'item rescue Boot the Writ node image in rescue mode (runs no jobs)'] : []),
    'item local Boot from the local disk (back to the firmware)',
    'item shell iPXE shell',
    `choose --default ${answer} --timeout ${o.menuTimeoutMs ?? MENU_TIMEOUT_MS} target || goto ${answer}`,
    'goto ${target}',
    ...netboot('install'),
    ...netboot('rescue'),
    ':local',
    // A script that chained this one sees the exit as a failed chain: writ-answer tells it to exit too
    // (efi-image/src/ipxe.ts, the boot.ipxe writ image ipxe writes, does).
    'set writ-answer local',
    'echo Writ: booting from the local disk: handing the machine back to the firmware (its next boot entry)',
    'exit 1',
    ':shell',
    'shell',
    'goto ${target}',
    ':failed',
    'echo Writ: the node image did not boot; trying again in 10 s',
    'sleep 10',
    `goto ${answer}`,
    '',
  ].join('\n');
}

/**
 * After an operator action on a node: the actions that decide its next boot set the answer for every MAC
 * its inventory lists (reinstall/install: install; rescue: rescue; unrescue: local). Returns what was set.
 */
export async function bootAnswerAfterAction(db: Queryable, node: NodeRecord, action: string): Promise<{ boot?: { answer: BootAnswer; macs: string[] } }> {
  const macs = macsOf(node.inventory);
  // An accept (of a failed node, say), a reject or a retire cancels a reinstall or rescue still pending.
  if (CLEARING_ACTIONS.has(action)) await clearBootAnswers(db, node.id, macs);
  const answer = ACTION_ANSWERS[action];
  if (!answer) return {};
  for (const mac of macs) await setBootAnswer(db, mac, answer, node.id, `operator:${action}`);
  return { boot: { answer, macs } };
}

/**
 * A node registering after the install answer was served (its state is `installing`): the machine's answer
 * goes back to `local`, and a node that came back with its identity finishes its install (installed; active
 * on its next healthy heartbeat). A different identity on that MAC (the state partition was blanked) is a new
 * node: the old one stays `installing` until its deadline fails it.
 */
export async function settleInstallBoot(
  db: Queryable,
  nodes: NodeRegistry,
  node: NodeRecord,
  log?: { warn(o: object, m?: string): void },
  opts: { planRuns?: boolean } = {},
): Promise<NodeRecord> {
  let finished = false;
  for (const row of await listBootAnswers(db, macsOf(node.inventory))) {
    if (row.answer !== 'install' || !row.nodeId) continue;
    const owner = row.nodeId === node.id ? node : await nodes.getNode(row.nodeId);
    if (owner?.state !== 'installing') continue; // the install answer was not served yet: keep it
    await setBootAnswer(db, row.mac, 'local', row.nodeId, `node:${node.id}`);
    if (owner.id === node.id) finished = true;
  }
  // A class with an install plan is installed when the node reports the plan ran (install-report.ts), not here.
  if (!finished || opts.planRuns) return node;
  return nodes
    .apply(node.id, 'install-done', { actor: `node:${node.id}`, reason: 'registered again after its install boot', byOperator: false })
    .catch((e: unknown) => {
      log?.warn({ node: node.id, err: (e as Error).message }, 'install-done refused');
      return node;
    });
}

/**
 * The machine fetched the install boot an operator ordered: its node becomes `installing`. A node that failed
 * after the order (its runner went silent while the machine rebooted into it, past the unreachable window)
 * resumes the order the ledger still holds — the operator's install, recorded with the operator as actor —
 * instead of leaving a machine that reinstalls at every boot attached to a failed node.
 */
async function installStarted(nodes: NodeRegistry, row: BootAnswerRow, mac: string): Promise<void> {
  let n = await nodes.getNode(row.nodeId!);
  if (!n) return;
  if (n.state === 'failed' && row.setBy.startsWith('operator:') && n.stateSince >= row.setAt) {
    const ordered = `${row.setBy.slice('operator:'.length)} ordered at ${new Date(row.setAt).toISOString()}`;
    n = await nodes.apply(n.id, 'install', {
      actor: row.setBy,
      reason: `the ${ordered} resumes: the machine fetched its install boot after it had failed (${n.reason ?? 'no reason recorded'})`,
      byOperator: true,
    });
  }
  if (n.state === 'install-pending' || n.state === 'reprovisioning') {
    await nodes.apply(n.id, 'install-started', { actor: `ipxe:${mac}`, reason: 'the machine fetched its install boot (iPXE)', byOperator: false });
  }
}

export function registerBootRoutes(app: FastifyInstance, db: Queryable, nodes: NodeRegistry | undefined, opts: { bootImage?: string | null } = {}): void {
  const configured = opts.bootImage ?? null;
  const security: never[] = [];
  app.get(
    '/boot/ipxe',
    {
      schema: {
        summary: 'the iPXE script for the machine with this MAC (no token: firmware asks)',
        security,
        querystring: { type: 'object', additionalProperties: false, properties: { mac: { type: 'string', maxLength: 64 } } },
      },
    },
    async (req, reply) => {
      const mac = parseMac((req.query as { mac?: string }).mac);
      const answer = await answerFor(db, mac);
      // A machine that boots locally needs no image; the menu offers the netboot items only when one is served.
      const dir = bootImageDir(configured);
      const image = answer.answer !== 'local' ? await configuredImage(configured) : dir ? await loadBootImage(dir).catch(() => null) : null;
      // Serving the install answer of a node an operator ordered (re)installed is the install starting.
      const row = answer.answer === 'install' ? answer.row : null;
      if (row?.nodeId && nodes)
        await installStarted(nodes, row, mac).catch((e: unknown) => req.log.warn({ node: row.nodeId, err: (e as Error).message }, 'install-started refused'));
      return reply.header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store').send(ipxeAnswerScript({ mac, answer, image }));
    },
  );
  for (const [route, which] of [
    ['/boot/vmlinuz', 'kernel'],
    ['/boot/initramfs.img', 'initramfs'],
  ] as const) {
    app.get(
      route,
      { schema: { summary: `the boot image's ${which} (no token: iPXE fetches it), checked against manifest.json`, security } },
      async (_req, reply) => {
        const image = await configuredImage(configured);
        const f = image[which];
        return reply
          .header('content-type', 'application/octet-stream')
          .header('content-length', f.bytes)
          .header('etag', `"${f.sha256}"`)
          .header('x-writ-sha256', f.sha256)
          .send(createReadStream(path.join(image.dir, f.file)));
      },
    );
  }
}
