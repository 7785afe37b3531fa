// A flow's steps as a DAG: one column per topological depth (a step sits one column right of its deepest
// dependency), edges as SVG curves from a dependency to its dependant, boxes coloured by the step's state.
import { h } from './preact.js';
import htm from './htm.js';

const html = htm.bind(h);
const W = 168;
const H = 52;
const GAP_X = 64;
const GAP_Y = 22;
const PAD = 12;

/** Columns by depth; steps keep the signed order within a column. Unknown dependencies are ignored. */
export function layout(steps) {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle cannot be signed; never loop on one anyway
    visiting.add(name);
    const deps = (byName.get(name)?.depends ?? []).filter((d) => byName.has(d));
    const d = deps.length === 0 ? 0 : 1 + Math.max(...deps.map(depthOf));
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  const columns = [];
  for (const s of steps) {
    const d = depthOf(s.name);
    (columns[d] ??= []).push(s);
  }
  const pos = new Map();
  columns.forEach((col, c) => col.forEach((s, r) => pos.set(s.name, { x: PAD + c * (W + GAP_X), y: PAD + r * (H + GAP_Y) })));
  const rows = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  return { pos, width: PAD * 2 + columns.length * W + Math.max(0, columns.length - 1) * GAP_X, height: PAD * 2 + rows * H + (rows - 1) * GAP_Y };
}

export function FlowDag({ steps }) {
  const { pos, width, height } = layout(steps);
  const edges = [];
  for (const s of steps) {
    for (const d of s.depends ?? []) {
      const a = pos.get(d);
      const b = pos.get(s.name);
      if (!a || !b) continue;
      const x1 = a.x + W;
      const y1 = a.y + H / 2;
      const x2 = b.x;
      const y2 = b.y + H / 2;
      const mx = (x1 + x2) / 2;
      edges.push(
        html`<path class="edge" data-from=${d} data-to=${s.name} d=${`M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}`} marker-end="url(#arrow)" />`,
      );
    }
  }
  return html` <svg class="dag" width=${width} height=${height} viewBox=${`0 0 ${width} ${height}`} role="img" aria-label="flow steps and their dependencies">
    <defs>
      <marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
      </marker>
    </defs>
    ${edges}
    ${steps.map((s) => {
      const p = pos.get(s.name);
      const jobs = s.jobs ?? [];
      const done = jobs.filter((j) => j.status === 'succeeded').length;
      return html` <g class=${`step st-${s.status}`} data-step=${s.name} data-status=${s.status} transform=${`translate(${p.x},${p.y})`}>
        <title>${`${s.name}: ${s.status}${s.error ? ` (${s.error.code}: ${s.error.message})` : ''}`}</title>
        <rect width=${W} height=${H} rx="8" />
        <text x="12" y="21" class="step-name">${s.name.length > 20 ? `${s.name.slice(0, 19)}…` : s.name}</text>
        <text x="12" y="40" class="step-state">${s.status}${jobs.length ? ` · ${done}/${jobs.length} jobs` : ''}</text>
      </g>`;
    })}
  </svg>`;
}
