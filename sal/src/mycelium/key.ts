// The node's mycelium identity. An existing identity is never silently regenerated: a corrupt, unreadable
// or swapped key file, or a missing one on a node that already had an identity, is MYCELIUM_KEY_INVALID.
// Only on the very first start (no key file and no recorded identity) is a key created, and that is reported.
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { WritError } from '@writ/protocol';
import type { MyceliumConfig } from './config.ts';

const KEY_BYTES = 32;

interface IdentityRecord {
  publicKey: string;
  createdAt: string;
}

/** The x25519 public key (hex) of a 32-byte secret, which is what mycelium reports as `nodePubkey`. */
export function myceliumPublicKey(secret: Uint8Array): string {
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), secret]);
  const jwk = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
  return Buffer.from(String(jwk.x), 'base64url').toString('hex');
}

function identityFile(config: MyceliumConfig): string {
  return path.join(config.stateDir, 'identity.json');
}

async function readIdentity(config: MyceliumConfig): Promise<IdentityRecord | null> {
  let raw: string;
  try {
    raw = await readFile(identityFile(config), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new WritError('MYCELIUM_KEY_INVALID', `the recorded mycelium identity cannot be read: ${(e as Error).message}`);
  }
  try {
    const rec = JSON.parse(raw) as IdentityRecord;
    if (typeof rec.publicKey !== 'string' || !/^[0-9a-f]{64}$/.test(rec.publicKey)) throw new Error('no public key');
    return rec;
  } catch {
    throw new WritError('MYCELIUM_KEY_INVALID', `the recorded mycelium identity ${identityFile(config)} is corrupt`);
  }
}

async function writeDurably(file: string, data: string | Uint8Array, mode: number, exclusive: boolean): Promise<void> {
  const target = exclusive ? file : `${file}.tmp-${process.pid}`;
  const fh = await open(target, exclusive ? 'wx' : 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (!exclusive) await rename(target, file);
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export interface KeyStatus {
  created: boolean;
  keyFile: string;
  publicKey: string;
}

/** Checks the key file against the recorded identity, creating both only on first start. */
export async function ensureMyceliumKey(config: MyceliumConfig): Promise<KeyStatus> {
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const recorded = await readIdentity(config);
  let secret: Buffer;
  try {
    secret = await readFile(config.keyFile);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT')
      throw new WritError('MYCELIUM_KEY_INVALID', `mycelium key file ${config.keyFile} cannot be read (${code ?? 'error'})`, { keyFile: config.keyFile });
    if (recorded) {
      throw new WritError(
        'MYCELIUM_KEY_INVALID',
        `mycelium key file ${config.keyFile} is missing, but this node has used identity ${recorded.publicKey}; restore the key or rekey the node deliberately`,
        { keyFile: config.keyFile, publicKey: recorded.publicKey },
      );
    }
    return createKey(config);
  }
  if (secret.length !== KEY_BYTES) {
    throw new WritError('MYCELIUM_KEY_INVALID', `mycelium key file ${config.keyFile} holds ${secret.length} bytes, not ${KEY_BYTES}`, {
      keyFile: config.keyFile,
    });
  }
  const publicKey = myceliumPublicKey(secret);
  if (recorded && recorded.publicKey !== publicKey) {
    throw new WritError('MYCELIUM_KEY_INVALID', `mycelium key file ${config.keyFile} is not the identity this node has used (${recorded.publicKey})`, {
      keyFile: config.keyFile,
      expected: recorded.publicKey,
      found: publicKey,
    });
  }
  if (!recorded) await writeDurably(identityFile(config), JSON.stringify({ publicKey, createdAt: new Date().toISOString() }), 0o600, false);
  return { created: false, keyFile: config.keyFile, publicKey };
}

async function createKey(config: MyceliumConfig): Promise<KeyStatus> {
  await mkdir(path.dirname(config.keyFile), { recursive: true, mode: 0o700 });
  const secret = randomBytes(KEY_BYTES);
  try {
    await writeDurably(config.keyFile, secret, 0o600, true);
  } catch (e) {
    // Someone else created it between our read and our write: use theirs, through the same checks.
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return ensureMyceliumKey(config);
    throw e;
  }
  const publicKey = myceliumPublicKey(secret);
  await writeDurably(identityFile(config), JSON.stringify({ publicKey, createdAt: new Date().toISOString() }), 0o600, false);
  return { created: true, keyFile: config.keyFile, publicKey };
}
