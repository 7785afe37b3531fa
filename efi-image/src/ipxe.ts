// The iPXE script `writ image ipxe` writes (boot.ipxe): it brings the network up and chains the coord's
// per-machine answer, GET /boot/ipxe?mac=${net0/mac} (coord/src/enroll/boot-routes.ts), which boots the node
// image's kernel and initramfs over HTTP, boots the machine in rescue mode, or hands it back to the firmware.
// Hand it to iPXE the way your network does: as the DHCP filename from a TFTP server (as the test does, through
// QEMU's built-in one), embedded in an iPXE build (make bin-x86_64-efi/ipxe.efi EMBED=boot.ipxe), or as
// autoexec.ipxe beside ipxe.efi on an ESP (iPXE 1.21.1 and later).
import { WritError } from '@writ/protocol';

/** The coord URL as iPXE reaches it (http or https, no query): `${url}/boot/ipxe?mac=${net0/mac}` is chained. */
export function ipxeChainScript(o: { coordUrl: string }): string {
  let u: URL;
  try {
    u = new URL(o.coordUrl);
  } catch {
    throw new WritError('CONFIG_INVALID', `the coord URL ${o.coordUrl} for iPXE is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new WritError('CONFIG_INVALID', `the coord URL ${o.coordUrl} for iPXE must use http or https`);
  if (u.search || u.hash || u.username || u.password)
    throw new WritError('CONFIG_INVALID', `the coord URL ${o.coordUrl} for iPXE must have no query, fragment or credentials`);
  // iPXE expands ${…} in script lines: a URL that holds one would be rewritten.
  if (/[${}\s]/.test(u.href)) throw new WritError('CONFIG_INVALID', `the coord URL ${o.coordUrl} for iPXE must not contain $, {, } or spaces`);
  const chain = `${u.href.replace(/\/+$/, '')}/boot/ipxe?mac=\${net0/mac}`;
  return [
    '#!ipxe',
    '# Writ: ask the coord what this machine boots (local disk, install, rescue). Written by writ image ipxe.',
    ':start',
    'dhcp || goto retry',
    `chain ${chain} || goto answered`,
    // A chained script's `exit` comes back here as a failed chain (iPXE 1.0.0+git-20190125 at least): the
    // coord's local answer sets writ-answer first, so that is told apart from a coord that did not answer.
    ':answered',
    'iseq ${writ-answer} local && goto local ||',
    ':retry',
    `echo Writ: no boot answer from ${u.origin} (no DHCP lease, or the coord did not answer); trying again in 10 s`,
    'sleep 10',
    'goto start',
    ':local',
    'exit 1',
    '',
  ].join('\n');
}
