export { runCli, COMMANDS } from './main.ts';
export type { Io } from './output.ts';
export { serviceLogger, type LogOutput } from './output.ts';
export { startStack, loadOrCreateKey, type Stack, type StackOptions } from './stack.ts';
export { startEmbeddedRedis, freePort, type EmbeddedRedis } from './embedded-redis.ts';
export { followEvents, api, resolveCoord, type CoordTarget } from './client.ts';
