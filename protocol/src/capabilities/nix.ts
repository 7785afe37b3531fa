import { argsObject, NAME_SCHEMA, type CapabilitySpec } from './types.ts';

// Nix, locked down (X7): substituters come only from configuration and are signature-checked; anything
// that installs (profile set, switch, copy into the store) takes only store paths pinned in the envelope.

/** A top-level store path: `/nix/store/<32 base32 chars>-<name>`. */
export const NIX_STORE_PATH_SCHEMA = { type: 'string', maxLength: 256, pattern: '^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$' };
const STORE_PATHS = { type: 'array', minItems: 1, maxItems: 64, items: NIX_STORE_PATH_SCHEMA };
const RELATIVE_PATH = { type: 'string', minLength: 1, maxLength: 512 };
const SUBSTITUTER = { type: 'string', minLength: 1, maxLength: 512 };

export const NIX_CAPABILITIES: CapabilitySpec[] = [
  {
    name: 'nix.build',
    dangerous: true,
    summary: 'Build a Nix file under the configured sources root (no GC root, configured substituters only)',
    args: argsObject(
      {
        file: RELATIVE_PATH,
        attr: { type: 'string', maxLength: 256, pattern: '^[A-Za-z0-9_.-]+$' },
        substituters: { type: 'array', maxItems: 8, items: SUBSTITUTER },
      },
      ['file'],
    ),
  },
  {
    name: 'nix.copy-out',
    dangerous: false,
    summary: "Copy store paths' closures to a binary-cache directory under the export root (signed when a key is configured)",
    args: argsObject({ paths: STORE_PATHS, to: NAME_SCHEMA }, ['paths', 'to']),
  },
  {
    name: 'nix.copy-in',
    dangerous: true,
    summary: 'Copy pinned store paths in from a configured, signature-checked substituter',
    args: argsObject({ paths: STORE_PATHS, from: SUBSTITUTER }, ['paths', 'from']),
  },
  {
    name: 'nix.profile-set',
    dangerous: true,
    summary: 'Point a profile at a pinned store path (a new generation)',
    args: argsObject({ profile: NAME_SCHEMA, path: NIX_STORE_PATH_SCHEMA }, ['profile', 'path']),
  },
  {
    name: 'nix.profile-rollback',
    dangerous: true,
    summary: 'Roll a profile back to its previous generation',
    args: argsObject({ profile: NAME_SCHEMA }, ['profile']),
  },
  {
    name: 'nix.generations',
    dangerous: false,
    readOnly: true,
    summary: "List a profile's generations",
    args: argsObject({ profile: NAME_SCHEMA }, ['profile']),
  },
  {
    name: 'nix.switch',
    dangerous: true,
    summary: 'Switch the system to a pinned generation, health-gated: activate, check, then make it the default or roll back',
    args: argsObject(
      {
        profile: NAME_SCHEMA,
        path: NIX_STORE_PATH_SCHEMA,
        healthCheck: argsObject(
          {
            argv: { type: 'array', minItems: 1, maxItems: 32, items: { type: 'string', maxLength: 4096 } },
            timeoutMs: { type: 'integer', minimum: 100, maximum: 600_000 },
          },
          ['argv'],
        ),
        activationTimeoutMs: { type: 'integer', minimum: 100, maximum: 1_800_000 },
      },
      ['profile', 'path', 'healthCheck'],
    ),
  },
];
