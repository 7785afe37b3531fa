// @writ/supervisor: admission, enqueue, result collection.
export { Supervisor, pickNode, type ReportSink, type SupervisorOptions, type QueueState, type Logger } from './supervisor.ts';
export { admitEnvelope, GrantStore, type Admitted } from './admission.ts';
export type { RunnerEvent, SupervisorReport } from './events.ts';
