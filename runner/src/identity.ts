// The node's own ed25519 identity: a 32-byte seed created on first start in the state dir (mode 0400).
// It is never regenerated silently: a seed that is missing for a node that has registered before, or a
// seed that is corrupt, is an error an operator resolves (`writ nodes rekey`), because a new key is a new
// identity and must be noticed.
import { constants } from 'node:fs';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { WritError, keyPairFromSeed, type KeyPair } from '@writ/protocol';

export interface NodeIdentity {
  nodeId: string;
  key: KeyPair;
  /** True when this start created the seed. */
  created: boolean;
}

const SEED = 'node.seed';
const META = 'node.json';

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

async function writeExclusive(file: string, data: Uint8Array | string, mode: number): Promise<void> {
  const fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Loads the node identity, creating it only on a node that has never had one. */
export async function loadNodeIdentity(stateDir: string, nodeId: string): Promise<NodeIdentity> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const seedPath = path.join(stateDir, SEED);
  const metaPath = path.join(stateDir, META);
  const hasSeed = await exists(seedPath);
  const hasMeta = await exists(metaPath);
  if (!hasSeed) {
    if (hasMeta) {
      throw new WritError(
        'NODE_IDENTITY_MISSING',
        `${seedPath} is missing but ${metaPath} shows this node had an identity; it is not regenerated. An operator must run \`writ nodes rekey ${nodeId}\` and remove ${metaPath} to enrol a new key.`,
      );
    }
    const kp = keyPairFromSeed(crypto.getRandomValues(new Uint8Array(32)));
    await writeExclusive(seedPath, kp.signing.seed, 0o400);
    await writeExclusive(metaPath, JSON.stringify({ nodeId, keyid: kp.keyid, createdAt: new Date().toISOString() }, null, 2) + '\n', 0o600);
    return { nodeId, key: kp, created: true };
  }
  let seed: Buffer;
  try {
    seed = await readFile(seedPath);
  } catch (e) {
    throw new WritError('NODE_IDENTITY_CORRUPT', `cannot read ${seedPath}: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (seed.length !== 32)
    throw new WritError(
      'NODE_IDENTITY_CORRUPT',
      `${seedPath} holds ${seed.length} bytes, not a 32-byte seed; it is not regenerated. Restore it, or rekey the node (\`writ nodes rekey ${nodeId}\`).`,
    );
  const kp = keyPairFromSeed(new Uint8Array(seed));
  if (hasMeta) {
    const meta = JSON.parse(await readFile(metaPath, 'utf8')) as { nodeId?: string; keyid?: string };
    if (meta.keyid && meta.keyid !== kp.keyid)
      throw new WritError('NODE_IDENTITY_CORRUPT', `${seedPath} does not match the key id recorded in ${metaPath} (${meta.keyid})`);
    if (meta.nodeId && meta.nodeId !== nodeId) throw new WritError('NODE_IDENTITY_CORRUPT', `this state dir belongs to node ${meta.nodeId}, not ${nodeId}`);
  }
  return { nodeId, key: kp, created: false };
}
