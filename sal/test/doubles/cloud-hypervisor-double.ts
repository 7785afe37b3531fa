// A double of cloud-hypervisor's REST API (openapi 0.3.0, /work/shared/reference/cloud-hypervisor-openapi.yaml),
// run as its own process exactly like the real binary: `cloud-hypervisor-double --api-socket path=<p>`.
// It keeps the published VM state machine (Created, Running, Paused, Shutdown), answers errors the way
// vmm/src/api/http/mod.rs does (a JSON array of messages, 404 for VmNotCreated / unknown device, 409 for
// duplicate ids, 500 for invalid transitions), writes a fake boot banner to a File serial, and appends every
// request to $CH_DOUBLE_REQUEST_LOG so tests can validate each body against the published schemas.
// It runs no guest: it is a model of the API, not of a VM.
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';

type State = 'Created' | 'Running' | 'Paused' | 'Shutdown';
interface Vm {
  config: Record<string, any>;
  state: State;
}

const socketArg = process.argv.indexOf('--api-socket');
const socketPath = /^path=(.+)$/.exec(process.argv[socketArg + 1] ?? '')?.[1];
if (socketArg < 0 || !socketPath) {
  process.stderr.write('usage: cloud-hypervisor-double --api-socket path=<socket>\n');
  process.exit(1);
}
const requestLog = process.env.CH_DOUBLE_REQUEST_LOG;
let vm: Vm | null = null;

// Only these transitions are allowed (vmm/src/vm.rs VmState::valid_transition).
const VALID: Record<State, State[]> = {
  Created: ['Running', 'Paused', 'Shutdown'],
  Running: ['Paused', 'Shutdown'],
  Shutdown: ['Running'],
  Paused: ['Running', 'Shutdown'],
};

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly messages: string[],
  ) {
    super(messages.join(': '));
  }
}

function needVm(): Vm {
  if (!vm) throw new ApiError(404, ['Error from API', 'The VM instance is not created']);
  return vm;
}

function transition(to: State, what: string): void {
  const v = needVm();
  if (!VALID[v.state].includes(to))
    throw new ApiError(500, ['Error from API', `The VM could not be ${what}`, `Invalid VM state transition: ${v.state} to ${to}`]);
  v.state = to;
}

function serial(text: string, truncate = false): void {
  const s = vm?.config.serial as { mode?: string; file?: string } | undefined;
  if (s?.mode !== 'File' || !s.file) return;
  if (truncate) writeFileSync(s.file, text);
  else appendFileSync(s.file, text);
}

function bootBanner(): void {
  const payload = (vm?.config.payload ?? {}) as { cmdline?: string };
  serial(`[    0.000000] Linux version 0.0.0-double\n[    0.000000] Command line: ${payload.cmdline ?? ''}\nCH-DOUBLE-USERSPACE-UP\n`);
}

function devices(kind: 'disks' | 'net'): Record<string, any>[] {
  const v = needVm();
  v.config[kind] ??= [];
  return v.config[kind] as Record<string, any>[];
}

function allIds(): string[] {
  return [...devices('disks'), ...devices('net')].map((d) => d.id as string).filter(Boolean);
}

function addDevice(kind: 'disks' | 'net', body: Record<string, any>, prefix: string): { status: number; body?: unknown } {
  const v = needVm();
  const list = devices(kind);
  const id = (body.id as string | undefined) ?? `_${prefix}${list.length}`;
  if (allIds().includes(id)) throw new ApiError(409, ['Error from API', 'The new device could not be added to the VM', `Identifier ${id} is not unique`]);
  list.push({ ...body, id });
  // Hot-plug answers with the PCI device; cold-plug before boot is 204.
  if (v.state === 'Running' || v.state === 'Paused') return { status: 200, body: { id, bdf: `0000:00:${(6 + list.length).toString(16).padStart(2, '0')}.0` } };
  return { status: 204 };
}

function fileUrl(url: unknown, what: string): string {
  if (typeof url !== 'string' || !url.startsWith('file://'))
    throw new ApiError(400, ['Error from API', `The ${what} URL is not valid`, `unsupported url ${String(url)}`]);
  return url.slice('file://'.length);
}

function handle(method: string, endpoint: string, body: any): { status: number; body?: unknown } {
  const put = method === 'PUT';
  const get = method === 'GET';
  switch (endpoint) {
    case 'vmm.ping':
      if (!get) break;
      return { status: 200, body: { build_version: 'double', version: '0.0.0-double', pid: process.pid, features: [] } };
    case 'vmm.shutdown':
      if (!put) break;
      setImmediate(() => {
        server.close();
        rmSync(socketPath!, { force: true });
        process.exit(0);
      });
      return { status: 204 };
    case 'vm.info': {
      if (!get) break;
      const v = needVm();
      return { status: 200, body: { config: v.config, state: v.state, memory_actual_size: v.config.memory?.size ?? 0 } };
    }
    case 'vm.create':
      if (!put) break;
      if (vm) throw new ApiError(500, ['Error from API', 'The VM could not be created', 'VM is already created']);
      if (!body || typeof body !== 'object' || !body.payload) throw new ApiError(400, ['Error from API', 'Error parsing VmConfig', 'missing field `payload`']);
      vm = { config: structuredClone(body), state: 'Created' };
      return { status: 204 };
    case 'vm.delete':
      if (!put) break;
      vm = null;
      return { status: 204 };
    case 'vm.boot': {
      if (!put) break;
      const v = needVm();
      const payload = v.config.payload as { kernel?: string; firmware?: string };
      const image = payload.kernel ?? payload.firmware;
      if (!image || !existsSync(image))
        throw new ApiError(500, ['Error from API', 'The VM could not boot', `Error loading kernel ${String(image)}: No such file or directory`]);
      transition('Running', 'booted');
      serial('', true);
      bootBanner();
      return { status: 204 };
    }
    case 'vm.shutdown':
      if (!put) break;
      transition('Shutdown', 'shut down');
      return { status: 204 };
    case 'vm.power-button':
      if (!put) break;
      if (needVm().state !== 'Running') throw new ApiError(500, ['Error from API', 'The power button could not be triggered', 'VM is not running']);
      // A cooperative guest: it powers itself off.
      serial('CH-DOUBLE-POWER-BUTTON\n');
      transition('Shutdown', 'shut down');
      return { status: 204 };
    case 'vm.reboot':
      if (!put) break;
      if (needVm().state !== 'Running') throw new ApiError(500, ['Error from API', 'The VM could not reboot', 'VM is not running']);
      bootBanner();
      return { status: 204 };
    case 'vm.pause':
      if (!put) break;
      transition('Paused', 'paused');
      return { status: 204 };
    case 'vm.resume':
      if (!put) break;
      if (needVm().state !== 'Paused') throw new ApiError(500, ['Error from API', 'The VM could not be resumed', 'VM is not paused']);
      transition('Running', 'resumed');
      return { status: 204 };
    case 'vm.add-disk':
      if (!put) break;
      if (!body?.path) throw new ApiError(400, ['Error from API', 'The disk configuration is not valid', 'path is missing']);
      return addDevice('disks', body, 'disk');
    case 'vm.add-net':
      if (!put) break;
      return addDevice('net', body ?? {}, 'net');
    case 'vm.remove-device': {
      if (!put) break;
      const v = needVm();
      const id = body?.id as string | undefined;
      if (!id || !allIds().includes(id))
        throw new ApiError(404, ['Error from API', 'The device could not be removed', `Unknown device identifier ${String(id)}`]);
      for (const kind of ['disks', 'net'] as const) v.config[kind] = devices(kind).filter((d) => d.id !== id);
      return { status: 204 };
    }
    case 'vm.resize': {
      if (!put) break;
      const v = needVm();
      if (v.state !== 'Running') throw new ApiError(500, ['Error from API', 'The VM could not be resized', 'VM is not running']);
      const cpus = v.config.cpus as { boot_vcpus: number; max_vcpus: number };
      const mem = v.config.memory as { size: number; hotplug_size?: number };
      if (body?.desired_vcpus !== undefined) {
        if (body.desired_vcpus > cpus.max_vcpus)
          throw new ApiError(500, ['Error from API', 'The VM could not be resized', 'Desired vCPU count exceeds the maximum']);
        cpus.boot_vcpus = body.desired_vcpus;
      }
      if (body?.desired_ram !== undefined) {
        if (body.desired_ram > mem.size + (mem.hotplug_size ?? 0))
          throw new ApiError(500, ['Error from API', 'The VM could not be resized', 'Cannot hotplug beyond the hotplug size']);
        mem.hotplug_size = mem.size + (mem.hotplug_size ?? 0) - body.desired_ram;
        mem.size = body.desired_ram;
      }
      return { status: 204 };
    }
    case 'vm.snapshot': {
      if (!put) break;
      const v = needVm();
      if (v.state !== 'Paused') throw new ApiError(500, ['Error from API', 'The VM could not be snapshotted', 'VM is not paused']);
      const dir = fileUrl(body?.destination_url, 'snapshot destination');
      if (!existsSync(dir)) throw new ApiError(500, ['Error from API', 'The VM could not be snapshotted', `destination ${dir} does not exist`]);
      writeFileSync(`${dir}/config.json`, JSON.stringify(v.config));
      writeFileSync(`${dir}/state.json`, JSON.stringify({ double: true }));
      return { status: 204 };
    }
    case 'vm.restore': {
      if (!put) break;
      if (vm) throw new ApiError(500, ['Error from API', 'The VM could not be restored', 'VM is already created']);
      const dir = fileUrl(body?.source_url, 'restore source');
      if (!existsSync(`${dir}/config.json`)) throw new ApiError(500, ['Error from API', 'The VM could not be restored', `no snapshot in ${dir}`]);
      vm = { config: JSON.parse(readFileSync(`${dir}/config.json`, 'utf8')), state: body?.resume ? 'Running' : 'Paused' };
      return { status: 204 };
    }
    default:
      throw new ApiError(404, [`Unknown endpoint ${endpoint}`]);
  }
  throw new ApiError(400, ['Error from API', `method ${method} is not allowed on ${endpoint}`]);
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    const endpoint = (req.url ?? '').replace(/^\/api\/v1\//, '');
    let answer: { status: number; body?: unknown };
    let body: unknown = undefined;
    try {
      if (text !== '') {
        try {
          body = JSON.parse(text);
        } catch (e) {
          throw new ApiError(400, ['Error from API', `SerdeJsonDeserialize: ${(e as Error).message}`]);
        }
      }
      if (requestLog) appendFileSync(requestLog, JSON.stringify({ method: req.method, endpoint, body: body ?? null, hasBody: text !== '' }) + '\n');
      if (!(req.url ?? '').startsWith('/api/v1/')) throw new ApiError(404, [`Unknown path ${req.url}`]);
      answer = handle(req.method ?? '', endpoint, body);
    } catch (e) {
      answer = e instanceof ApiError ? { status: e.status, body: e.messages } : { status: 500, body: ['Error from API', String(e)] };
    }
    const out = answer.body === undefined ? '' : JSON.stringify(answer.body);
    res.writeHead(answer.status, out ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) } : { 'content-length': 0 });
    res.end(out);
  });
});

mkdirSync(socketPath.slice(0, socketPath.lastIndexOf('/')) || '/', { recursive: true });
rmSync(socketPath, { force: true });
server.listen(socketPath);
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    rmSync(socketPath, { force: true });
    process.exit(0);
  });
}
