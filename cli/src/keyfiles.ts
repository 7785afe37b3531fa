// Reading and writing key files, and the local keyring ($WRIT_HOME/keys) that lets a key id stand for a public key.
import { constants } from 'node:fs';
import { mkdir, open, readFile, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WritError, decodeKeyFile, errorCodeOf, fromB64url, isKeyId, keyIdOf, publicKeyProblem, type KeyPair } from '@writ/protocol';

export function writHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.WRIT_HOME ?? path.join(os.homedir(), '.writ');
}
export function keyringDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(writHome(env), 'keys');
}

async function readKeyText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new WritError('KEY_FILE_NOT_FOUND', `key file ${file} does not exist (create one with: writ keys generate --out ${file})`);
    if (code === 'EISDIR') throw new WritError('KEY_FILE_UNREADABLE', `${file} is a directory, not a key file`);
    throw new WritError('KEY_FILE_UNREADABLE', `cannot read key file ${file}: ${code ?? (e as Error).message}`);
  }
}

/** Loads a private key file. */
export async function loadPrivateKey(file: string): Promise<KeyPair> {
  const decoded = decodeKeyFile(await readKeyText(file), file);
  if (!decoded.keyPair) throw new WritError('KEY_FILE_INVALID', `${file} holds only a public key; signing needs the private key file`);
  return decoded.keyPair;
}

/** Resolves `--pubkey` given as a key file (private or public), a raw base64url key, or a key id in the local keyring. */
export async function resolvePublicKey(spec: string, env: NodeJS.ProcessEnv = process.env): Promise<{ publicKey: Uint8Array; keyid: string; from: string }> {
  if (isKeyId(spec)) {
    const dir = keyringDir(env);
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch {
      /* no keyring yet */
    }
    for (const n of names) {
      try {
        const d = decodeKeyFile(await readFile(path.join(dir, n), 'utf8'), n);
        if (d.keyid === spec) return { publicKey: d.publicKey, keyid: d.keyid, from: path.join(dir, n) };
      } catch {
        /* not a key file */
      }
    }
    throw new WritError('KEY_FILE_NOT_FOUND', `no key with id ${spec} in the keyring ${dir} (pass the public key file instead)`);
  }
  const raw = /^[A-Za-z0-9_-]{43}$/.test(spec) ? fromB64url(spec) : null;
  if (raw && raw.length === 32) {
    const problem = publicKeyProblem(raw);
    if (problem) throw new WritError('KEY_INVALID', problem);
    return { publicKey: raw, keyid: keyIdOf(raw), from: 'argument' };
  }
  const d = decodeKeyFile(await readKeyText(spec), spec);
  return { publicKey: d.publicKey, keyid: d.keyid, from: spec };
}

/** Writes a file with the given mode, refusing to overwrite unless `force`. */
export async function writeNewFile(file: string, text: string, mode: number, force: boolean): Promise<void> {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
  const flags = force ? constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC : constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;
  let fh;
  try {
    fh = await open(file, flags, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new WritError('KEY_FILE_EXISTS', `${file} exists already; pass --force to overwrite it`);
    throw new WritError('KEY_FILE_UNREADABLE', `cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    await fh.chmod(mode); // O_CREAT's mode is masked by umask; a private key must be exactly 0600
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes a signed envelope to a file of its own (0644), refusing one that exists unless `force`: an envelope
 * signed earlier is never replaced by mistake (ENVELOPE_FILE_EXISTS, nothing written).
 */
export async function writeEnvelopeFile(file: string, text: string, force: boolean): Promise<void> {
  try {
    await writeNewFile(file, text, 0o644, force);
  } catch (e) {
    if (errorCodeOf(e) !== 'KEY_FILE_EXISTS') throw e;
    throw new WritError(
      'ENVELOPE_FILE_EXISTS',
      `${file} exists already (an envelope signed earlier?); nothing was written: pass --force to overwrite it, or choose another --out`,
    );
  }
}
