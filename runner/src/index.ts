// @writ/runner: the node daemon.
export { Runner, type RunnerOptions } from './runner.ts';
export {
  INSTALL_DATA_NAME,
  excludedDisks,
  installPlanDue,
  installedPlanRecord,
  runInstallPlan,
  sendInstallReport,
  signInstallReport,
  type InstallPlanOptions,
  type InstallReportBody,
  type InstalledRecord,
} from './install.ts';
export { NodeAgent, backoffDelay, systemClock, type Clock, type NodeAgentOptions } from './agent.ts';
export { loadNodeIdentity, type NodeIdentity } from './identity.ts';
export { collectInventory, type InventoryOptions } from './inventory.ts';
export { startNodeDaemon, nodeHealth, type NodeDaemon, type NodeDaemonOptions } from './node-daemon.ts';
export { salHostTable, type SalHostConfig } from './sal-table.ts';
export { loadNodeConfig, parseNodeConfig, type NodeConfigFile } from './node-config.ts';
export { SandboxPool, HostBroker, checkScriptCompiles, type SandboxJob, type SandboxPoolOptions, type SandboxOutcome } from './sandbox/index.ts';
export { runnerConfig, type RunnerConfig, type RunnerGiven, type RunnerEnv } from './config.ts';
export { runNodeDaemon, type NodeDaemonRun } from './main.ts';
export {
  planScript,
  parsePlanFixture,
  parsePlanFixtureText,
  PLANNED_ANSWERS,
  type Plan,
  type PlanOptions,
  type PlannedCall,
  type PlanFixture,
  type PlanFixtureEntry,
  type PlanLogLine,
  type PlanAnswerSource,
} from './plan.ts';
