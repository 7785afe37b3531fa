// @writ/runner: the node daemon.
export { Runner, type RunnerOptions, type RunnerLogger } from './runner.ts';
