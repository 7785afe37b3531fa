// A newc cpio writer for the initramfs: entries sorted by path, owner root, one fixed mtime and inode
// numbers in that order, so the same files always give the same bytes (GNU cpio takes them from disk).
export type CpioEntry =
  | { path: string; kind: 'dir'; mode: number }
  | { path: string; kind: 'file'; mode: number; data: Uint8Array }
  | { path: string; kind: 'symlink'; target: string }
  | { path: string; kind: 'chardev'; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Serialises the entries (sorted by path, parents implied first by the sort) with `mtime` on every one. */
export function writeCpio(entries: readonly CpioEntry[], mtime: number): Buffer {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) if (sorted[i]!.path === sorted[i - 1]!.path) throw new Error(`cpio: ${sorted[i]!.path} twice`);
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, data: Uint8Array, rdev: [number, number] = [0, 0]) => {
    const nameBytes = Buffer.from(`${name}\0`);
    const header =
      '070701' +
      hex8(ino++) +
      hex8(mode) +
      hex8(0) +
      hex8(0) +
      hex8(1) +
      hex8(mtime) +
      hex8(data.length) +
      hex8(0) +
      hex8(0) +
      hex8(rdev[0]) +
      hex8(rdev[1]) +
      hex8(nameBytes.length) +
      hex8(0);
    parts.push(Buffer.from(header, 'ascii'), nameBytes, Buffer.alloc(pad4(110 + nameBytes.length)), Buffer.from(data), Buffer.alloc(pad4(data.length)));
  };
  for (const e of sorted) {
    const name = e.path.replace(/^\/+/, '');
    if (e.kind === 'dir') push(name, S_IFDIR | e.mode, new Uint8Array(0));
    else if (e.kind === 'file') push(name, S_IFREG | e.mode, e.data);
    else if (e.kind === 'symlink') push(name, S_IFLNK | 0o777, Buffer.from(e.target));
    else push(name, S_IFCHR | e.mode, new Uint8Array(0), [e.major, e.minor]);
  }
  ino = 0;
  push('TRAILER!!!', 0, new Uint8Array(0));
  const out = Buffer.concat(parts);
  // The kernel reads archives in 512-byte blocks; pad as cpio(1) does.
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}
