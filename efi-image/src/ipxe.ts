// The iPXE script that boots the node image over HTTP: the same kernel, initramfs and command line as the UKI.
export function ipxeScript(o: { baseUrl: string; cmdline: string }): string {
  const base = o.baseUrl.replace(/\/+$/, '');
  return ['#!ipxe', 'dhcp', `kernel ${base}/vmlinuz initrd=initramfs.img ${o.cmdline}`, `initrd ${base}/initramfs.img`, 'boot', ''].join('\n');
}
