export { runCli, COMMANDS } from './main.ts';
export type { Io } from './output.ts';
