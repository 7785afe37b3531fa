// @writ/coord: the coordinator service.
export { buildApp, ROUTES, type AppOptions } from './app.ts';
export { CoordService, type CoordOptions, type JobEventMessage } from './service.ts';
export { InProcessSupervisorClient, HttpSupervisorClient, type SupervisorClient } from './supervisor-client.ts';
export { openLedger, type Ledger } from './ledger/index.ts';
export { backupLedger, checkLedger, restoreLedger, type LedgerCheckItem, type LedgerCheckReport, type LedgerSource } from './ledger/maintenance.ts';
export { checkBootImageDir, coordConfig, type CoordConfig, type CoordGiven } from './config.ts';
export { runCoord, type CoordRun } from './main.ts';
export { LEASE_KINDS, LocalLeases, SessionLeases, type Leases } from './ledger/leases.ts';
export { PgSession, type PgSessionOptions } from './ledger/pg-session.ts';
export { EVENTS_CHANNEL, EventRelay, coordName, startCoordination, type Coordination } from './events/relay.ts';
