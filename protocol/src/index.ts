// @writ/protocol: the contract every tier shares. No I/O.
export * from './errors.ts';
export * from './strict-json.ts';
export * from './encoding.ts';
export * from './ed25519.ts';
export * from './keys.ts';
export * from './payload-types.ts';
export * from './dsse.ts';
export * from './schema.ts';
export * from './capabilities/index.ts';
export * from './job.ts';
export * from './queues.ts';
export * from './acl.ts';
export * from './keyset.ts';
export * from './node.ts';
export * from './wire/index.ts';
export * from './config-checks.ts';
export * from './service-lifecycle.ts';
