// Signed flows end to end on a real stack (Redis, PGlite, a supervisor and three runners): fan-out over the
// nodes labelled role=hv, inputs wired from earlier steps' signed results, retries with backoff, a failing
// step that fails its dependants and not its siblings, cancel, and a step output altered in the ledger. The
// scenarios live in tests/helpers/flow-scenarios.ts; tests/flows.cluster.redis.test.ts runs them on a Redis
// Cluster.
import { flowSuite } from './helpers/flow-scenarios.ts';

flowSuite('flows');
