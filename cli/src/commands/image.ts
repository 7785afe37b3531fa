// writ image build|usb|ipxe: the node boot image (efi-image/), from Debian packages on this machine.
import path from 'node:path';
import { WritError } from '@writ/protocol';
// The image builder lives with the image (efi-image/), not in a package of its own.
import { buildImage, buildUsb, writeArtifact, writeManifest, type ImageManifest, type ImageOptions } from '../../../efi-image/src/build.ts';
import { ipxeChainScript } from '../../../efi-image/src/ipxe.ts';
import { parse } from '../args.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { adminKeyRefs } from './services.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const HELP = `usage: writ image <build|usb|ipxe> --out DIR --coord URL --redis URL --admin-key FILE [options] [--json]

  build   the initramfs (busybox, Node and the bundled runner, drivers, /init) and the UKI
          (systemd-boot's EFI stub + kernel + initramfs + command line): DIR/writ-node.efi
  usb     build, then a GPT disk image for a USB stick or a VM: an ESP with the UKI at
          EFI/BOOT/BOOTX64.EFI and an empty state partition (writ-state): DIR/writ-usb.img
  ipxe    build, then DIR/boot.ipxe: an iPXE script that asks the coord what the machine boots
          (GET <coord>/boot/ipxe?mac=\${net0/mac}: local disk, install or rescue); the coord serves
          DIR's kernel and initramfs over HTTP when started with WRIT_BOOT_IMAGE=DIR (docs/boot.md)

options:
  --out DIR            where the files go (created)
  --coord URL          the coord the node registers with, as the node reaches it
  --redis URL          the Redis its runner takes jobs from, as the node reaches it
  --admin-key FILE     a pinned admin public key (repeat for several): the first key set the node accepts
  --admin-threshold K  signatures needed on that first key set (default 1)
  --cluster ID         the cluster id jobs must name (default writ-dev)
  --token TOKEN        an enrollment token (writ enroll rules add --token prints one); a rule with
                       --auto-accept accepts nodes that present its token
  --cmdline WORDS      more kernel command line words (e.g. "console=ttyS0")
  --kernel FILE        the kernel (default: the newest /boot/vmlinuz-*; apt-get install linux-image-cloud-amd64)
  --state-mib N        size of the USB image's state partition (default 1024; the node
                       reports itself unhealthy with less than 512 MiB free there)
  --boot-url URL       ipxe: the coord as iPXE reaches it (default: --coord)

The same inputs give the same bytes (SOURCE_DATE_EPOCH sets every timestamp); DIR/manifest.json lists
each file's sha256 and every input. Needs: busybox-static, systemd-boot-efi, binutils, a kernel package,
and for usb: fdisk, dosfstools, mtools.

example:
  writ image usb --out node-image --coord http://10.0.0.1:7340 --redis redis://10.0.0.1:6379 \\
    --admin-key admin.pub --token "$TOKEN" --cmdline console=ttyS0`;

const OPTIONS = {
  out: { type: 'string' },
  coord: { type: 'string' },
  redis: { type: 'string' },
  'admin-key': { type: 'string', multiple: true },
  'admin-threshold': { type: 'string', default: '1' },
  cluster: { type: 'string', default: 'writ-dev' },
  token: { type: 'string' },
  cmdline: { type: 'string' },
  kernel: { type: 'string' },
  'state-mib': { type: 'string' },
  'boot-url': { type: 'string' },
} as const;

type Kind = 'build' | 'usb' | 'ipxe';

function required(v: string | undefined, flag: string): string {
  if (!v) throw new WritError('USAGE', `${flag} is required\n\n${HELP.split('\n')[0]}`);
  return v;
}

function sub(kind: Kind) {
  return async (argv: string[], io: Io, ctx: CliContext): Promise<number> => {
    const { values } = parse(argv, OPTIONS, { min: 0, max: 0, usage: `writ image ${kind} --out DIR --coord URL --redis URL --admin-key FILE` });
    if (values.help) return (io.out(HELP), EXIT.ok);
    const out = path.resolve(required(values.out, '--out DIR'));
    const admins = await adminKeyRefs(values['admin-key'], ctx.env);
    const t0 = Date.now();
    const opts: ImageOptions = {
      outDir: out,
      boot: {
        coordUrl: required(values.coord ?? ctx.env.WRIT_COORD, '--coord URL'),
        redisUrl: required(values.redis, '--redis URL'),
        clusterId: values.cluster,
        token: values.token ?? null,
        adminKeys: admins.map((k) => k.publicKey),
        adminThreshold: Number(values['admin-threshold']),
      },
      ...(values.cmdline ? { extraCmdline: values.cmdline } : {}),
      ...(values.kernel ? { kernel: values.kernel } : {}),
      // Progress goes to stderr, so --json output stays one document on stdout.
      onProgress: (step) => io.err(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${step}…`),
    };
    if (opts.boot.adminKeys.length === 0) throw new WritError('USAGE', '--admin-key FILE is required: the node accepts key sets only from pinned admins');
    // Checked before the build, which takes a while.
    const chain = kind === 'ipxe' ? ipxeChainScript({ coordUrl: values['boot-url'] ?? opts.boot.coordUrl }) : null;
    let manifest: ImageManifest;
    if (kind === 'usb') {
      const stateMiB = values['state-mib'] === undefined ? undefined : Number(values['state-mib']);
      if (stateMiB !== undefined && !Number.isInteger(stateMiB)) throw new WritError('USAGE', '--state-mib must be a whole number');
      manifest = await buildUsb({ ...opts, ...(stateMiB !== undefined ? { stateMiB } : {}) });
    } else {
      manifest = await buildImage(opts);
    }
    if (chain !== null) {
      manifest.artifacts.ipxe = await writeArtifact(out, 'boot.ipxe', Buffer.from(chain));
      await writeManifest(out, manifest);
    }
    if (values.json) return (printJson(io, { out, ...manifest }), EXIT.ok);
    for (const a of Object.values(manifest.artifacts)) io.out(`${path.join(out, a.file)}  ${(a.bytes / 2 ** 20).toFixed(1)} MiB  sha256:${a.sha256}`);
    if (kind === 'ipxe') io.out(`the coord serves this image's kernel and initramfs when started with WRIT_BOOT_IMAGE=${out}`);
    io.out(
      `manifest: ${path.join(out, 'manifest.json')} (kernel ${manifest.kernel.version}, node ${manifest.node.version}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    return EXIT.ok;
  };
}

export const imageCommand: Command = {
  name: 'image',
  summary: 'build the node boot image: UKI, USB disk image, iPXE script',
  help: HELP,
  subcommands: { build: sub('build'), usb: sub('usb'), ipxe: sub('ipxe') },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};
