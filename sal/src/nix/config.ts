// Nix SAL configuration and the flags every Nix command gets (X7): substituters only from this
// configuration, signatures always required, evaluation restricted to the sources root.
import path from 'node:path';
import { assertSchema, compileSchema, WritError } from '@writ/protocol';

export interface NixConfigInput {
  /** Directory holding the profiles this SAL manages (e.g. /nix/var/nix/profiles/writ). */
  profilesRoot: string;
  /** Directory `nix.build` may read Nix files from; evaluation is restricted to it. */
  sourcesRoot?: string;
  /** Directory under which `nix.copy-out` creates binary-cache directories. */
  exportRoot?: string;
  /** The only substituters Nix may use (URLs). Each is signature-checked against `trustedPublicKeys`. */
  substituters?: string[];
  trustedPublicKeys?: string[];
  /** Secret key (`nix-store --generate-binary-cache-key`) that signs what `nix.copy-out` exports. */
  signingKeyFile?: string;
  /** NIX_REMOTE for every command; '' (default) is the local store used directly, single-user, as root. */
  store?: string;
  /** Group of build users; '' (default) builds as the calling user, which single-user root mode needs. */
  buildUsersGroup?: string;
  /** Nix build sandbox (default true). */
  sandbox?: boolean;
  /** Absolute paths a health check may run besides programs inside pinned store paths. */
  healthCommands?: string[];
  buildTimeoutMs?: number;
}

export type NixConfig = Readonly<Required<Omit<NixConfigInput, 'sourcesRoot' | 'exportRoot' | 'signingKeyFile'>>> &
  Readonly<Pick<NixConfigInput, 'sourcesRoot' | 'exportRoot' | 'signingKeyFile'>>;

const ABSOLUTE = { type: 'string', minLength: 1, maxLength: 4096, pattern: '^/' };
const validateConfig = compileSchema<NixConfigInput>({
  type: 'object',
  additionalProperties: false,
  required: ['profilesRoot'],
  properties: {
    profilesRoot: ABSOLUTE,
    sourcesRoot: ABSOLUTE,
    exportRoot: ABSOLUTE,
    substituters: { type: 'array', maxItems: 16, items: { type: 'string', minLength: 1, maxLength: 512, pattern: '^(https?|file|s3|ssh|ssh-ng)://[^\\s]+$' } },
    trustedPublicKeys: { type: 'array', maxItems: 16, items: { type: 'string', pattern: '^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=$' } },
    signingKeyFile: ABSOLUTE,
    store: { type: 'string', maxLength: 4096 },
    buildUsersGroup: { type: 'string', maxLength: 64 },
    sandbox: { type: 'boolean' },
    healthCommands: { type: 'array', maxItems: 64, items: ABSOLUTE },
    buildTimeoutMs: { type: 'integer', minimum: 1000, maximum: 86_400_000 },
  },
});

/** Validates, defaults and freezes the configuration; a substituter without a trusted key is refused. */
export function nixConfig(input: unknown): NixConfig {
  assertSchema(validateConfig, input, 'nix config', 'CONFIG_INVALID');
  const substituters = input.substituters ?? [];
  const trustedPublicKeys = input.trustedPublicKeys ?? [];
  if (substituters.length > 0 && trustedPublicKeys.length === 0) {
    throw new WritError('CONFIG_INVALID', 'nix substituters are configured without trusted public keys: every substituter must be signature-checked');
  }
  return Object.freeze({
    profilesRoot: path.resolve(input.profilesRoot),
    sourcesRoot: input.sourcesRoot,
    exportRoot: input.exportRoot,
    substituters: Object.freeze([...substituters]) as string[],
    trustedPublicKeys: Object.freeze([...trustedPublicKeys]) as string[],
    signingKeyFile: input.signingKeyFile,
    store: input.store ?? '',
    buildUsersGroup: input.buildUsersGroup ?? '',
    sandbox: input.sandbox ?? true,
    healthCommands: Object.freeze([...(input.healthCommands ?? [])]) as string[],
    buildTimeoutMs: input.buildTimeoutMs ?? 30 * 60_000,
  });
}

/** Refuses any substituter that is not configured (configured ones are signature-checked by construction). */
export function allowedSubstituters(config: NixConfig, requested: readonly string[] | undefined): string[] {
  if (requested === undefined) return [...config.substituters];
  for (const s of requested) {
    if (!config.substituters.includes(s)) {
      throw new WritError('NIX_SUBSTITUTER_NOT_ALLOWED', `substituter ${JSON.stringify(s)} is not configured on this node`, { substituter: s, configured: config.substituters });
    }
  }
  return [...requested];
}

/** The options every Nix command gets, whatever nix.conf or NIX_CONFIG say. */
export function lockedDownOptions(config: NixConfig, substituters: readonly string[] = config.substituters): string[] {
  return [
    '--option', 'substituters', substituters.join(' '),
    '--option', 'extra-substituters', '',
    '--option', 'require-sigs', 'true',
    '--option', 'trusted-public-keys', config.trustedPublicKeys.join(' '),
    '--option', 'build-users-group', config.buildUsersGroup,
    '--option', 'sandbox', config.sandbox ? 'true' : 'false',
  ];
}

/** Environment for Nix commands: the configured store, and no ambient NIX_CONFIG/NIX_PATH from the runner. */
export function nixEnv(config: NixConfig): Record<string, string> {
  return { NIX_REMOTE: config.store, NIX_CONFIG: '', NIX_PATH: '' };
}

export const NIX_COMMAND = ['--extra-experimental-features', 'nix-command'];
