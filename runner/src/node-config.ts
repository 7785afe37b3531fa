// A node's configuration file (`writ runner --config node.json`, `writ dev --config node.json`): the node's
// labels and the SAL areas its runner offers scripts, each with its roots. Checked in full at start: an
// unknown key, a wrong type or a SAL area's own check (absolute roots, loopback-only Mycelium API, signed
// substituters …) stops the start with CONFIG_INVALID naming the file and the field. See docs/sal.md.
import { readFile } from 'node:fs/promises';
import { LABEL_KEY_PATTERN, WritError, errorCodeOf, parseStrictJson } from '@writ/protocol';
import { salHostTable, type SalHostConfig } from './sal-table.ts';
import type { HostTable } from './broker.ts';

export interface NodeConfigFile {
  labels: Record<string, string>;
  sal: SalHostConfig;
}

const AREAS = ['btrfs', 'net', 'vm', 'mycelium', 'nix'] as const;

function invalid(file: string, message: string): never {
  throw new WritError('CONFIG_INVALID', `${file}: ${message}`, { file });
}

/** Parses and checks a node config document (the file's text); `file` names it in errors. */
export function parseNodeConfig(text: string | Uint8Array, file: string): NodeConfigFile & { hostTable: HostTable } {
  let doc: unknown;
  try {
    doc = parseStrictJson(text, { maxBytes: 1024 * 1024, maxDepth: 16 });
  } catch (e) {
    invalid(file, `not valid JSON: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) invalid(file, 'a node config is a JSON object with "labels" and/or "sal"');
  for (const k of Object.keys(doc)) if (k !== 'labels' && k !== 'sal') invalid(file, `unknown key ${JSON.stringify(k)} (a node config has "labels" and "sal")`);
  const d = doc as { labels?: unknown; sal?: unknown };
  const labels: Record<string, string> = {};
  if (d.labels !== undefined) {
    if (!d.labels || typeof d.labels !== 'object' || Array.isArray(d.labels)) invalid(file, '"labels" must be an object of strings');
    for (const [k, v] of Object.entries(d.labels)) {
      if (!new RegExp(LABEL_KEY_PATTERN).test(k)) invalid(file, `label key ${JSON.stringify(k)} must match ${LABEL_KEY_PATTERN}`);
      if (typeof v !== 'string' || v.length > 63) invalid(file, `label ${k} must be a string of at most 63 characters`);
      labels[k] = v;
    }
  }
  const sal: SalHostConfig = {};
  if (d.sal !== undefined) {
    if (!d.sal || typeof d.sal !== 'object' || Array.isArray(d.sal)) invalid(file, '"sal" must be an object of SAL areas (btrfs, net, vm, mycelium, nix)');
    for (const [k, v] of Object.entries(d.sal)) {
      if (!(AREAS as readonly string[]).includes(k)) invalid(file, `unknown SAL area ${JSON.stringify(k)} (known: ${AREAS.join(', ')})`);
      if (!v || typeof v !== 'object' || Array.isArray(v)) invalid(file, `sal.${k} must be an object`);
      (sal as Record<string, unknown>)[k] = v;
    }
  }
  // Each area checks its own settings as it is built; the first refusal names its area.
  let hostTable: HostTable;
  try {
    hostTable = salHostTable(sal);
  } catch (e) {
    const area = AREAS.find((a) => new RegExp(`\\b${a}\\b`, 'i').test((e as Error).message)) ?? 'sal';
    invalid(file, `sal.${area === 'sal' ? '' : area}: ${errorCodeOf(e) ? '' : 'invalid: '}${(e as Error).message}`.replace('sal.: ', 'sal: '));
  }
  return { labels, sal, hostTable };
}

/** Reads and checks a node config file. */
export async function loadNodeConfig(file: string): Promise<NodeConfigFile & { hostTable: HostTable }> {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (e) {
    throw new WritError('CONFIG_INVALID', `cannot read the node config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file });
  }
  return parseNodeConfig(text, file);
}
