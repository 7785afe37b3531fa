// Ledger thread entry: plain JavaScript so it starts the same under node, tsx and vitest; it registers the
// TypeScript loader for this thread, then loads the thread's code.
import { register } from 'tsx/esm/api';

register();
await import('./pglite-thread.ts');
