// writ keys generate | show
import path from 'node:path';
import { encodePrivateKeyFile, encodePublicKeyFile, generateKeyPair, b64url } from '@writ/protocol';
import { parse } from '../args.ts';
import { keyringDir, resolvePublicKey, writeNewFile } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const GENERATE_HELP = `usage: writ keys generate [--out FILE] [--force] [--comment TEXT] [--json]

Creates an ed25519 key pair. The private key file is written with mode 0600 and never
overwritten without --force; the public key goes next to it as FILE.pub.
Default FILE: $WRIT_HOME/keys/default.key (WRIT_HOME defaults to ~/.writ).

example:
  writ keys generate --out alice.key`;

const SHOW_HELP = `usage: writ keys show FILE|KEYID [--json]

Prints the key id and public key of a key file (private or public) or of a key id in the keyring.

example:
  writ keys show alice.key`;

async function generate(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    { out: { type: 'string' }, force: { type: 'boolean', default: false }, comment: { type: 'string' } },
    { min: 0, max: 0, usage: 'writ keys generate [--out FILE] [--force]' },
  );
  if (values.help) return (io.out(GENERATE_HELP), EXIT.ok);
  const out = values.out ?? path.join(keyringDir(ctx.env), 'default.key');
  const kp = generateKeyPair();
  await writeNewFile(out, encodePrivateKeyFile(kp, values.comment), 0o600, values.force === true);
  const pubFile = `${out}.pub`;
  await writeNewFile(pubFile, encodePublicKeyFile(kp.publicKey, values.comment), 0o644, true);
  if (values.json) printJson(io, { ok: true, keyid: kp.keyid, publicKey: b64url(kp.publicKey), privateKeyFile: out, publicKeyFile: pubFile });
  else {
    io.out(`wrote private key ${out} (mode 0600)`);
    io.out(`wrote public key  ${pubFile}`);
    io.out(`key id: ${kp.keyid}`);
  }
  return EXIT.ok;
}

async function show(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(argv, {}, { min: 1, max: 1, usage: 'writ keys show FILE|KEYID' });
  if (values.help) return (io.out(SHOW_HELP), EXIT.ok);
  const k = await resolvePublicKey(positionals[0]!, ctx.env);
  if (values.json) printJson(io, { ok: true, keyid: k.keyid, publicKey: b64url(k.publicKey), from: k.from });
  else {
    io.out(`key id:     ${k.keyid}`);
    io.out(`public key: ${b64url(k.publicKey)}`);
  }
  return EXIT.ok;
}

export const keysCommand: Command = {
  name: 'keys',
  summary: 'generate and inspect ed25519 keys',
  help: `usage: writ keys <generate|show> ...\n\n${GENERATE_HELP}\n\n${SHOW_HELP}\n\nTo let a key run jobs, add it to the key set: writ users add NAME --key FILE --role ROLE`,
  subcommands: { generate, show },
  run(argv, io, ctx) {
    return dispatchSubcommand(this, argv, io, ctx);
  },
};
