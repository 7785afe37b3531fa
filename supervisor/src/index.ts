// @writ/supervisor: admission, enqueue, result collection.
export { Supervisor, pickNode, type ReportSink, type SupervisorOptions, type QueueState, type Logger, type DispatchItem } from './supervisor.ts';
export { admitEnvelope, type Admitted } from './admission.ts';
export { buildSupervisorApp, httpReportSink, SUPERVISOR_ROUTES } from './http.ts';
export { checkJsonCharset, guardedServerOptions, installRequestGuards, DEFAULT_REQUEST_TIMEOUT_MS, type HttpGuardOptions } from './http-guards.ts';
export { checkRedisEviction, assertRedisSafe, type RedisCheckResult } from './redis-check.ts';
export { supervisorConfig, type SupervisorConfig, type SupervisorGiven } from './config.ts';
export { runSupervisor, type SupervisorRun } from './main.ts';
export { startSupervisorHeartbeats, signedSupervisorHeartbeat, type HeartbeatLoop, type HeartbeatOptions } from './heartbeat.ts';
