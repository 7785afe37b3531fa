// One contract module per seam (docs/architecture.md, "Seams"): each defines the data both sides exchange
// and the one strict parser both use.
export * from './errors.ts';
export * from './http.ts';
export * from './queue.ts';
export * from './runner-events.ts';
export * from './reports.ts';
export * from './supervisor-api.ts';
export * from './supervisor-heartbeat.ts';
