// writ keyset | users | roles: trust administration through signed key sets (T6). Changes are made to a
// local draft (an unsigned key set envelope), signed by admins with their own keys, then published.
// The coord never holds an admin key: it only verifies and distributes what admins signed.
import { readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import {
  CAPABILITIES,
  PAYLOAD_TYPES,
  WritError,
  addSignature,
  b64url,
  bootstrapKeySet,
  encodeEnvelope,
  encodeKeySet,
  errorCodeOf,
  fromB64,
  nextKeySet,
  parseEnvelope,
  parseKeySet,
  type Envelope,
  type KeySet,
} from '@writ/protocol';
import { humanDuration, parse, parseDurationS } from '../args.ts';
import { api, resolveCoord, type CoordTarget } from '../client.ts';
import { loadPrivateKey, resolvePublicKey, writHome, writeNewFile } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const draftPath = (ctx: CliContext, flag?: string) => flag ?? path.join(writHome(ctx.env), 'keyset.draft.json');

export async function fetchKeySet(coord: CoordTarget): Promise<{ version: number; keySet: KeySet; envelope: string }> {
  return (await api<{ version: number; keySet: KeySet; envelope: string }>(coord, 'GET', '/v1/keyset')).body;
}

function envelopeOf(ks: KeySet): Envelope {
  return { payloadType: PAYLOAD_TYPES.keySet, payload: Buffer.from(encodeKeySet(ks)).toString('base64'), signatures: [] };
}

async function readDraft(file: string): Promise<{ env: Envelope; ks: KeySet }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new WritError('USAGE', `no draft at ${file}: start one with \`writ keyset propose\``);
    throw e;
  }
  const env = parseEnvelope(text.trim(), undefined, { allowUnsigned: true });
  if (env.payloadType !== PAYLOAD_TYPES.keySet) throw new WritError('PAYLOAD_TYPE_MISMATCH', `${file} is not a key set envelope`);
  return { env, ks: parseKeySet(fromB64(env.payload)!) };
}

async function writeDraft(file: string, env: Envelope): Promise<void> {
  await writeNewFile(file, encodeEnvelope(env) + '\n', 0o600, true);
}

/** Applies an edit to the draft (starting one from the coord's current set if there is none); signatures are dropped. */
async function editDraft(ctx: CliContext, values: { draft?: string; coord?: string }, io: Io, edit: (ks: KeySet) => void): Promise<KeySet> {
  const file = draftPath(ctx, values.draft);
  let ks: KeySet;
  let hadSignatures = false;
  try {
    const d = await readDraft(file);
    ks = d.ks;
    hadSignatures = d.env.signatures.length > 0;
  } catch (e) {
    if ((e as WritError).code !== 'USAGE') throw e;
    const current = await fetchKeySet(await resolveCoord(values.coord, ctx.env));
    ks = nextKeySet(current.keySet, ctx.now());
    io.err(`started draft version ${ks.version} from the published version ${current.version}: ${file}`);
  }
  edit(ks);
  parseKeySet(encodeKeySet(ks)); // refuse an inconsistent draft now, not at publish time
  await writeDraft(file, envelopeOf(ks));
  if (hadSignatures) io.err('the draft changed: its signatures were dropped; sign it again');
  return ks;
}

function summary(ks: KeySet, nowS: number): string[] {
  const lines = [
    `key set version ${ks.version} for cluster ${ks.cluster}; expires in ${humanDuration(ks.expiresAt - nowS)} (${new Date(ks.expiresAt * 1000).toISOString()})`,
    `admins (${ks.admins.threshold} of ${ks.admins.keys.length} must sign the next version): ${ks.admins.keys.map((k) => k.keyid).join(', ')}`,
    'roles:',
    ...ks.roles.map(
      (r) =>
        `  ${r.name.padEnd(16)} caps=${r.caps.join(',')} nodes=${r.nodes.join(',')}${Object.keys(r.labels).length ? ` labels=${JSON.stringify(r.labels)}` : ''}`,
    ),
    'users:',
    ...ks.users.map(
      (u) =>
        `  ${u.name.padEnd(16)} roles=${u.roles.join(',') || '-'} keys=${u.keys.map((k) => k.keyid + (ks.revoked.includes(k.keyid) ? ' (REVOKED)' : '')).join(', ')}`,
    ),
  ];
  if (Object.keys(ks.thresholds).length)
    lines.push(
      `thresholds: ${Object.entries(ks.thresholds)
        .map(([c, k]) => `${c} needs ${k} signers`)
        .join('; ')}`,
    );
  if (ks.revoked.length) lines.push(`revoked keys: ${ks.revoked.join(', ')}`);
  if (ks.supervisors?.length)
    lines.push('supervisors:', ...ks.supervisors.map((s) => `  ${s.id.padEnd(16)} pools=${s.pools.join(',')} keys=${s.keys.map((k) => k.keyid).join(', ')}`));
  return lines;
}

const COMMON = { draft: { type: 'string' }, coord: { type: 'string' } } as const;

const KEYSET_HELP = `usage: writ keyset <init|show|propose|sign|publish|threshold|admins|supervisor> ...

  writ keyset init --admin ADMIN.key.pub [--cluster ID] [--ttl 90d]
                                                   a new cluster's first draft (version 1): ADMIN holds every
                                                   capability; the key every tier pins with --admin-key
  writ keyset show [--draft FILE]                  the published key set (or a draft)
  writ keyset propose [--ttl 90d] [--draft FILE]   start a draft: the next version of the published set
  writ keyset threshold CAP K                      require K distinct signers for a dangerous capability
  writ keyset admins [--add FILE] [--remove KEYID] [--threshold K]
  writ keyset supervisor add ID --key FILE|KEYID --pool NAME [--pool ...]
                                                   let a supervisor exist and serve these node pools (federation)
  writ keyset supervisor remove ID                 its heartbeats and reports are refused once published
  writ keyset supervisor list [--draft FILE]
  writ keyset sign [--draft FILE] --key ADMIN.key  add an admin signature to the draft
  writ keyset publish [--draft FILE] [--sign-with ADMIN.key]
                                                   send it to the coord, which checks k-of-n admin signatures

The draft defaults to $WRIT_HOME/keyset.draft.json. Edit it with \`writ users\` and \`writ roles\`.

a new cluster (no key set yet; \`writ dev\` makes its own):
  writ keyset init --admin admin.key.pub
  writ keyset publish --sign-with admin.key

example (one admin):
  writ users add alice --key alice.key.pub --role operator
  writ roles add operator --caps host.facts,time.sleep --label env=dev
  writ keyset publish --sign-with ~/.writ/keys/admin.key`;

async function show(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, COMMON, { min: 0, max: 0, usage: 'writ keyset show [--draft FILE]' });
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  const ks = values.draft ? (await readDraft(values.draft)).ks : (await fetchKeySet(await resolveCoord(values.coord, ctx.env))).keySet;
  if (values.json) printJson(io, ks);
  else for (const l of summary(ks, ctx.now())) io.out(l);
  return EXIT.ok;
}

/**
 * The first draft of a new cluster: version 1 with one admin holding every capability (what \`writ dev\` publishes
 * for itself). Only while the coord has no key set; after that a draft starts from the published one (propose).
 */
async function init(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(
    argv,
    { ...COMMON, admin: { type: 'string' }, cluster: { type: 'string' }, ttl: { type: 'string', default: '90d' } },
    { min: 0, max: 0, usage: 'writ keyset init --admin ADMIN.key.pub [--cluster ID] [--ttl 90d]' },
  );
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  if (!values.admin)
    throw new WritError('USAGE', '--admin ADMIN.key.pub is required: the public key of the admin every tier pins with --admin-key (writ keys generate)');
  const ttlS = parseDurationS(values.ttl!, '--ttl');
  const admin = await resolvePublicKey(values.admin, ctx.env);
  const coord = await resolveCoord(values.coord, ctx.env);
  let published: number | null = null;
  try {
    published = (await fetchKeySet(coord)).version;
  } catch (e) {
    if (errorCodeOf(e) !== 'NOT_FOUND') throw e;
  }
  if (published !== null)
    throw new WritError('USAGE', `the coord has key set version ${published} already: start the next version with \`writ keyset propose\``);
  // The coords' and supervisors' --cluster (writ-dev unless given): a key set for another cluster is refused.
  const cluster = values.cluster ?? ctx.env.WRIT_CLUSTER ?? 'writ-dev';
  const ks = bootstrapKeySet({ cluster, admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS: ctx.now(), ttlS });
  parseKeySet(encodeKeySet(ks));
  const file = draftPath(ctx, values.draft);
  await writeDraft(file, envelopeOf(ks));
  if (values.json) printJson(io, { ok: true, draft: file, version: ks.version, cluster, admin: admin.keyid });
  else io.out(`draft version 1 for cluster ${cluster} written to ${file}, admin ${admin.keyid}; publish it with \`writ keyset publish --sign-with ADMIN.key\``);
  return EXIT.ok;
}

async function propose(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, { ...COMMON, ttl: { type: 'string', default: '90d' } }, { min: 0, max: 0, usage: 'writ keyset propose [--ttl 90d]' });
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  const current = await fetchKeySet(await resolveCoord(values.coord, ctx.env));
  const ks = nextKeySet(current.keySet, ctx.now(), parseDurationS(values.ttl!, '--ttl'));
  const file = draftPath(ctx, values.draft);
  await writeDraft(file, envelopeOf(ks));
  if (values.json) printJson(io, { ok: true, draft: file, version: ks.version });
  else io.out(`draft version ${ks.version} written to ${file}`);
  return EXIT.ok;
}

async function sign(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, { ...COMMON, key: { type: 'string', multiple: true } }, { min: 0, max: 0, usage: 'writ keyset sign --key ADMIN.key' });
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  if (!values.key?.length) throw new WritError('USAGE', '--key ADMIN.key is required');
  const file = draftPath(ctx, values.draft);
  let { env } = await readDraft(file);
  for (const k of await Promise.all(values.key.map(loadPrivateKey))) env = addSignature(env, k);
  await writeDraft(file, env);
  if (values.json) printJson(io, { ok: true, signatures: env.signatures.length });
  else io.out(`${file}: ${env.signatures.length} signature(s)`);
  return EXIT.ok;
}

async function publish(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(
    argv,
    { ...COMMON, 'sign-with': { type: 'string', multiple: true } },
    { min: 0, max: 0, usage: 'writ keyset publish [--sign-with ADMIN.key]' },
  );
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  const file = draftPath(ctx, values.draft);
  let { env } = await readDraft(file);
  for (const k of await Promise.all((values['sign-with'] ?? []).map(loadPrivateKey))) env = addSignature(env, k);
  if (env.signatures.length === 0)
    throw new WritError('USAGE', `${file} has no admin signature yet: sign it with \`writ keyset sign --key ADMIN.key\`, or pass --sign-with ADMIN.key`);
  const coord = await resolveCoord(values.coord, ctx.env);
  const r = (await api<{ version: number; changed: boolean }>(coord, 'POST', '/v1/keyset', encodeEnvelope(env))).body;
  // The draft is spent: the next change starts from what is now published. Keep it beside for the record.
  await rename(file, file.replace(/\.json$/, '') + `.v${r.version}.published.json`).catch(() => {});
  if (values.json) printJson(io, { ok: true, ...r });
  else io.out(r.changed ? `published key set version ${r.version}` : `version ${r.version} was already published`);
  return EXIT.ok;
}

async function threshold(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, COMMON, { min: 2, max: 2, usage: 'writ keyset threshold CAP K' });
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  const [cap, kText] = positionals as [string, string];
  const k = Number(kText);
  if (!CAPABILITIES.get(cap)?.dangerous) throw new WritError('USAGE', `${cap} is not a dangerous capability (thresholds apply to dangerous ones)`);
  if (!Number.isInteger(k) || k < 1 || k > 16) throw new WritError('USAGE', 'K must be 1 to 16');
  await editDraft(ctx, values, io, (ks) => {
    ks.thresholds[cap] = k;
  });
  if (!values.json) io.out(`draft: ${cap} now needs ${k} distinct signers`);
  return EXIT.ok;
}

async function admins(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(
    argv,
    { ...COMMON, add: { type: 'string', multiple: true }, remove: { type: 'string', multiple: true }, threshold: { type: 'string' } },
    { min: 0, max: 0, usage: 'writ keyset admins [--add FILE] [--remove KEYID] [--threshold K]' },
  );
  if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
  const adds = await Promise.all((values.add ?? []).map((f) => resolvePublicKey(f, ctx.env)));
  const ks = await editDraft(ctx, values, io, (ks) => {
    for (const a of adds) if (!ks.admins.keys.some((k) => k.keyid === a.keyid)) ks.admins.keys.push({ keyid: a.keyid, publicKey: b64url(a.publicKey) });
    ks.admins.keys = ks.admins.keys.filter((k) => !(values.remove ?? []).includes(k.keyid));
    if (values.threshold) ks.admins.threshold = Number(values.threshold);
  });
  if (!values.json) io.out(`draft: ${ks.admins.threshold} of ${ks.admins.keys.length} admins must sign the next version`);
  return EXIT.ok;
}

/** writ keyset supervisor add|remove|list: which supervisors exist and which pools each may serve (federation). */
async function supervisor(argv: string[], io: Io, ctx: CliContext) {
  const [action, ...rest] = argv;
  if (action === 'list') {
    const { values } = parse(rest, COMMON, { min: 0, max: 0, usage: 'writ keyset supervisor list [--draft FILE]' });
    if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
    const ks = values.draft ? (await readDraft(values.draft)).ks : (await fetchKeySet(await resolveCoord(values.coord, ctx.env))).keySet;
    if (values.json) return (printJson(io, ks.supervisors ?? []), EXIT.ok);
    for (const s of ks.supervisors ?? []) io.out(`${s.id.padEnd(16)} pools=${s.pools.join(',')} keys=${s.keys.map((k) => k.keyid).join(', ')}`);
    return EXIT.ok;
  }
  if (action === 'add') {
    const { values, positionals } = parse(
      rest,
      { ...COMMON, key: { type: 'string', multiple: true }, pool: { type: 'string', multiple: true } },
      { min: 1, max: 1, usage: 'writ keyset supervisor add ID --key FILE --pool NAME' },
    );
    if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
    if (!values.key?.length) throw new WritError('USAGE', "--key FILE|KEYID is required: the supervisor's public key (its state dir holds supervisor.key.pub)");
    if (!values.pool?.length)
      throw new WritError('USAGE', '--pool NAME is required: the node pool(s) it may serve (nodes are in pool default unless enrollment assigns another)');
    const keys = await Promise.all(values.key.map((f) => resolvePublicKey(f, ctx.env)));
    const id = positionals[0]!;
    await editDraft(ctx, values, io, (ks) => {
      const list = (ks.supervisors ??= []);
      const existing = list.find((s) => s.id === id);
      const entry = existing ?? { id, keys: [], pools: [] };
      for (const k of keys) if (!entry.keys.some((x) => x.keyid === k.keyid)) entry.keys.push({ keyid: k.keyid, publicKey: b64url(k.publicKey) });
      for (const p of values.pool ?? []) if (!entry.pools.includes(p)) entry.pools.push(p);
      if (!existing) list.push(entry);
    });
    if (!values.json)
      io.out(`draft: supervisor ${id} with ${keys.map((k) => k.keyid).join(', ')} for pool(s) ${values.pool.join(', ')} (publish to take effect)`);
    return EXIT.ok;
  }
  if (action === 'remove') {
    const { values, positionals } = parse(rest, COMMON, { min: 1, max: 1, usage: 'writ keyset supervisor remove ID' });
    if (values.help) return (io.out(KEYSET_HELP), EXIT.ok);
    await editDraft(ctx, values, io, (ks) => {
      if (!ks.supervisors?.some((s) => s.id === positionals[0])) throw new WritError('NOT_FOUND', `no supervisor ${positionals[0]} in the draft`);
      ks.supervisors = ks.supervisors.filter((s) => s.id !== positionals[0]);
    });
    if (!values.json) io.out(`draft: supervisor ${positionals[0]} removed (publish to take effect)`);
    return EXIT.ok;
  }
  if (action === undefined || action === '--help' || action === '-h') return (io.out(KEYSET_HELP), action === undefined ? EXIT.usage : EXIT.ok);
  throw new WritError('USAGE', `unknown subcommand "keyset supervisor ${action}"; try: add, remove, list`);
}

export const keysetCommand: Command = {
  name: 'keyset',
  summary: 'show, draft, sign and publish the signed key set',
  help: KEYSET_HELP,
  subcommands: { init, show, propose, sign, publish, threshold, admins, supervisor },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};

const USERS_HELP = `usage: writ users <add|remove|revoke|list> ...   (edits the key set draft)

  writ users add NAME --key FILE|KEYID [--key ...] [--role R ...]
  writ users remove NAME
  writ users revoke KEYID        refuse this key everywhere, even for jobs already queued (KEY_REVOKED)
  writ users list [--draft FILE]

example:
  writ users add alice --key alice.key.pub --role operator && writ keyset publish --sign-with admin.key`;

async function usersAdd(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(
    argv,
    { ...COMMON, key: { type: 'string', multiple: true }, role: { type: 'string', multiple: true } },
    { min: 1, max: 1, usage: 'writ users add NAME --key FILE [--role R]' },
  );
  if (values.help) return (io.out(USERS_HELP), EXIT.ok);
  if (!values.key?.length) throw new WritError('USAGE', '--key FILE|KEYID is required');
  const keys = await Promise.all(values.key.map((f) => resolvePublicKey(f, ctx.env)));
  const name = positionals[0]!;
  await editDraft(ctx, values, io, (ks) => {
    const existing = ks.users.find((u) => u.name === name);
    const user = existing ?? { name, keys: [], roles: [] };
    for (const k of keys) if (!user.keys.some((x) => x.keyid === k.keyid)) user.keys.push({ keyid: k.keyid, publicKey: b64url(k.publicKey) });
    for (const r of values.role ?? []) if (!user.roles.includes(r)) user.roles.push(r);
    if (!existing) ks.users.push(user);
  });
  if (!values.json) io.out(`draft: user ${name} with ${keys.map((k) => k.keyid).join(', ')}${values.role?.length ? `, roles ${values.role.join(', ')}` : ''}`);
  return EXIT.ok;
}

async function usersRemove(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, COMMON, { min: 1, max: 1, usage: 'writ users remove NAME' });
  if (values.help) return (io.out(USERS_HELP), EXIT.ok);
  await editDraft(ctx, values, io, (ks) => {
    if (!ks.users.some((u) => u.name === positionals[0])) throw new WritError('NOT_FOUND', `no user ${positionals[0]}`);
    ks.users = ks.users.filter((u) => u.name !== positionals[0]);
  });
  if (!values.json) io.out(`draft: user ${positionals[0]} removed`);
  return EXIT.ok;
}

async function usersRevoke(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, COMMON, { min: 1, max: 1, usage: 'writ users revoke KEYID' });
  if (values.help) return (io.out(USERS_HELP), EXIT.ok);
  await editDraft(ctx, values, io, (ks) => {
    if (!ks.revoked.includes(positionals[0]!)) ks.revoked.push(positionals[0]!);
  });
  if (!values.json) io.out(`draft: ${positionals[0]} revoked (publish to take effect; queued jobs it signed will fail with KEY_REVOKED)`);
  return EXIT.ok;
}

async function usersList(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, COMMON, { min: 0, max: 0, usage: 'writ users list' });
  if (values.help) return (io.out(USERS_HELP), EXIT.ok);
  const ks = values.draft ? (await readDraft(values.draft)).ks : (await fetchKeySet(await resolveCoord(values.coord, ctx.env))).keySet;
  if (values.json) return (printJson(io, ks.users), EXIT.ok);
  for (const u of ks.users)
    io.out(
      `${u.name.padEnd(16)} roles=${u.roles.join(',') || '-'} keys=${u.keys.map((k) => k.keyid + (ks.revoked.includes(k.keyid) ? ' (REVOKED)' : '')).join(', ')}`,
    );
  return EXIT.ok;
}

export const usersCommand: Command = {
  name: 'users',
  summary: 'manage users and their keys in the key set draft',
  help: USERS_HELP,
  subcommands: { add: usersAdd, remove: usersRemove, revoke: usersRevoke, list: usersList },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};

const ROLES_HELP = `usage: writ roles <add|remove|list> ...   (edits the key set draft)

  writ roles add NAME --caps a,b [--node ID ...] [--label k=v ...]   capabilities over a target scope
  writ roles remove NAME
  writ roles list [--draft FILE]

Without --node the role covers any node; --label narrows it to nodes (or selectors) with those labels.

example:
  writ roles add vm-operator --caps "vm.*,btrfs.snapshot" --label rack=r1`;

async function rolesAdd(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(
    argv,
    { ...COMMON, caps: { type: 'string' }, node: { type: 'string', multiple: true }, label: { type: 'string', multiple: true } },
    { min: 1, max: 1, usage: 'writ roles add NAME --caps a,b' },
  );
  if (values.help) return (io.out(ROLES_HELP), EXIT.ok);
  if (!values.caps) throw new WritError('USAGE', '--caps is required');
  const labels: Record<string, string> = {};
  for (const l of values.label ?? []) {
    const m = /^([^=]+)=(.*)$/.exec(l);
    if (!m) throw new WritError('USAGE', `--label ${l}: expected key=value`);
    labels[m[1]!] = m[2]!;
  }
  const name = positionals[0]!;
  const role = {
    name,
    caps: values.caps
      .split(',')
      .map((c) => c.trim())
      .filter(Boolean),
    nodes: values.node?.length ? values.node : ['*'],
    labels,
  };
  await editDraft(ctx, values, io, (ks) => {
    ks.roles = [...ks.roles.filter((r) => r.name !== name), role];
  });
  if (!values.json)
    io.out(
      `draft: role ${name}: caps ${role.caps.join(', ')} on ${role.nodes.join(', ')}${Object.keys(labels).length ? ` with ${JSON.stringify(labels)}` : ''}`,
    );
  return EXIT.ok;
}

async function rolesRemove(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, COMMON, { min: 1, max: 1, usage: 'writ roles remove NAME' });
  if (values.help) return (io.out(ROLES_HELP), EXIT.ok);
  await editDraft(ctx, values, io, (ks) => {
    if (ks.users.some((u) => u.roles.includes(positionals[0]!))) throw new WritError('USAGE', `role ${positionals[0]} is still given to a user`);
    ks.roles = ks.roles.filter((r) => r.name !== positionals[0]);
  });
  if (!values.json) io.out(`draft: role ${positionals[0]} removed`);
  return EXIT.ok;
}

async function rolesList(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, COMMON, { min: 0, max: 0, usage: 'writ roles list' });
  if (values.help) return (io.out(ROLES_HELP), EXIT.ok);
  const ks = values.draft ? (await readDraft(values.draft)).ks : (await fetchKeySet(await resolveCoord(values.coord, ctx.env))).keySet;
  if (values.json) return (printJson(io, ks.roles), EXIT.ok);
  for (const r of ks.roles)
    io.out(
      `${r.name.padEnd(16)} caps=${r.caps.join(',')} nodes=${r.nodes.join(',')}${Object.keys(r.labels).length ? ` labels=${JSON.stringify(r.labels)}` : ''}`,
    );
  return EXIT.ok;
}

export const rolesCommand: Command = {
  name: 'roles',
  summary: 'manage roles (capabilities over target scopes) in the key set draft',
  help: ROLES_HELP,
  subcommands: { add: rolesAdd, remove: rolesRemove, list: rolesList },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};
