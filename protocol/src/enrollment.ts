// Enrollment's wire contract (issue 11). Four separate records, each with its own payload type and owner:
// the machine's inventory (the node says what it is), its assignment (the ledger's rules say what it
// becomes: hostname, class, pool, labels), its bootstrap secret (the enrollment token, exchanged once per
// node key for a registration) and its install plan (what a class installs, on a disk chosen by stable hints).
// The registration answer carries the assignment and the plan, never runtime scheduling hints.
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import { LABEL_KEY_PATTERN } from './job.ts';

export const INVENTORY_PAYLOAD_TYPE = PAYLOAD_TYPES.nodeInventory;
export const ASSIGNMENT_PAYLOAD_TYPE = PAYLOAD_TYPES.nodeAssignment;
export const INSTALL_PLAN_PAYLOAD_TYPE = PAYLOAD_TYPES.installPlan;

export interface InventoryDisk {
  name: string;
  sizeBytes: number;
  model: string | null;
  serial: string | null;
  wwn: string | null;
  /** Names under /dev/disk/by-id (stable across boots and disk order). */
  byId: string[];
  rotational: boolean;
}

export interface InventoryNic {
  name: string;
  mac: string;
  driver: string | null;
  speedMbps: number | null;
  carrier: boolean;
}

/** What a node says it is, as its image collected it at boot. */
export interface NodeInventory {
  type: typeof INVENTORY_PAYLOAD_TYPE;
  /** True when the node found no state partition: its identity lives in memory and is new at every boot. */
  diskless: boolean;
  dmi: { vendor: string | null; product: string | null; serial: string | null; uuid: string | null };
  cpu: { model: string; threads: number };
  memoryBytes: number;
  nics: InventoryNic[];
  disks: InventoryDisk[];
}

/** What the ledger's rules made of a node. */
export interface NodeAssignment {
  type: typeof ASSIGNMENT_PAYLOAD_TYPE;
  nodeId: string;
  hostname: string | null;
  class: string | null;
  pool: string | null;
  labels: Record<string, string>;
  /** The enrollment rule that made it, or null when an operator assigned by hand. */
  rule: string | null;
}

/** A disk chosen by stable hints (never /dev/sdX): every hint given must hold, and exactly one disk must match. */
export interface DiskHints {
  serial?: string;
  wwn?: string;
  byId?: string;
  model?: string;
  minBytes?: number;
  maxBytes?: number;
}

export interface InstallPlan {
  type: typeof INSTALL_PLAN_PAYLOAD_TYPE;
  class: string;
  disk: DiskHints;
  /** btrfs subvolumes to create on the target disk's data partition. */
  subvolumes: string[];
  /** Signed job envelopes (as `writ sign` writes them) the node runs first, in order. */
  jobs: string[];
}

/** The coord's answer to a registration: the node as the ledger now has it, its assignment and its plan. */
export interface RegistrationAnswer {
  id: string;
  state: string;
  labels: Record<string, string>;
  pool?: string;
  /** The Redis address the supervisors of its pool announce for runners (no credentials); null when none does. */
  redis?: string | null;
  assignment: NodeAssignment | null;
  installPlan: InstallPlan | null;
}

const str = { type: ['string', 'null'], maxLength: 256 };
const inventorySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'diskless', 'dmi', 'cpu', 'memoryBytes', 'nics', 'disks'],
  properties: {
    type: { const: INVENTORY_PAYLOAD_TYPE },
    diskless: { type: 'boolean' },
    dmi: {
      type: 'object',
      additionalProperties: false,
      required: ['vendor', 'product', 'serial', 'uuid'],
      properties: { vendor: str, product: str, serial: str, uuid: str },
    },
    cpu: {
      type: 'object',
      additionalProperties: false,
      required: ['model', 'threads'],
      properties: { model: { type: 'string', maxLength: 256 }, threads: { type: 'integer', minimum: 0 } },
    },
    memoryBytes: { type: 'integer', minimum: 0 },
    nics: {
      type: 'array',
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'mac', 'driver', 'speedMbps', 'carrier'],
        properties: {
          name: { type: 'string', maxLength: 32 },
          mac: { type: 'string', pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' },
          driver: str,
          speedMbps: { type: ['integer', 'null'] },
          carrier: { type: 'boolean' },
        },
      },
    },
    disks: {
      type: 'array',
      maxItems: 128,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'sizeBytes', 'model', 'serial', 'wwn', 'byId', 'rotational'],
        properties: {
          name: { type: 'string', maxLength: 64 },
          sizeBytes: { type: 'integer', minimum: 0 },
          model: str,
          serial: str,
          wwn: str,
          byId: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 256 } },
          rotational: { type: 'boolean' },
        },
      },
    },
  },
};
const validateInventory = compileSchema<NodeInventory>(inventorySchema);

/** Checks an inventory as a node sent it; throws SCHEMA_INVALID with the first problem. */
export function parseNodeInventory(v: unknown): NodeInventory {
  assertSchema(validateInventory, v, 'node inventory');
  return v as NodeInventory;
}

/** True when `v` claims to be an enrollment inventory (older runners send host facts instead). */
export function isNodeInventory(v: unknown): boolean {
  return typeof v === 'object' && v !== null && (v as { type?: unknown }).type === INVENTORY_PAYLOAD_TYPE;
}

export const LABELS_SCHEMA = {
  type: 'object',
  maxProperties: 32,
  propertyNames: { pattern: LABEL_KEY_PATTERN },
  additionalProperties: { type: 'string', maxLength: 63 },
};
