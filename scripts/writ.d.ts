// Generated from the capability registry by `npm run gen:docs`. Do not edit.
// Type your deployment scripts against it: /** @param {WritContext} ctx */ or `import type` in TS.

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Host functions granted to the script. Only capabilities listed in the envelope's `caps` are present. */
export interface WritSal {
  btrfs?: {
    /** Snapshot a subvolume (read-only or writable). Capability `btrfs.snapshot`. */
    snapshot?(args?: Record<string, never>): Promise<JsonValue>;
  };
  host?: {
    /** Read CPU, memory, disks, NICs, DMI, kernel and virtualization facts. Capability `host.facts`. */
    facts?(args?: Record<string, never>): Promise<JsonValue>;
  };
  mycelium?: {
    /** Read the node's overlay subnet, address and public key. Capability `mycelium.info`. */
    info?(args?: Record<string, never>): Promise<JsonValue>;
    /** Add a peer endpoint (ensure: adding a known peer is not an error). Capability `mycelium.peer-add`. */
    "peer-add"?(args: {
      endpoint: string;
    }): Promise<JsonValue>;
    /** Remove a peer endpoint (ensure: removing an unknown peer is not an error). Capability `mycelium.peer-remove`. */
    "peer-remove"?(args: {
      endpoint: string;
    }): Promise<JsonValue>;
    /** List known peers and their connection state. Capability `mycelium.peers`. */
    peers?(args?: Record<string, never>): Promise<JsonValue>;
    /** List selected (default) or fallback overlay routes. Capability `mycelium.routes`. */
    routes?(args?: {
      kind?: "selected" | "fallback";
    }): Promise<JsonValue>;
    /** Start the mycelium daemon (creating its key only on first start) and wait for its API (dangerous: may need several signers). Capability `mycelium.start`. */
    start?(args?: {
      peers?: Array<string>;
    }): Promise<JsonValue>;
    /** Stop the mycelium daemon (dangerous: may need several signers). Capability `mycelium.stop`. */
    stop?(args?: Record<string, never>): Promise<JsonValue>;
    /** Derive a workload's stable overlay address inside the node's /64. Capability `mycelium.workload-address`. */
    "workload-address"?(args: {
      name: string;
    }): Promise<JsonValue>;
  };
  net?: {
    bridge?: {
      /** Create a bridge if missing (dangerous: may need several signers). Capability `net.bridge.ensure`. */
      ensure?(args?: Record<string, never>): Promise<JsonValue>;
    };
  };
  nix?: {
    /** Build a Nix file under the configured sources root (no GC root, configured substituters only) (dangerous: may need several signers). Capability `nix.build`. */
    build?(args: {
      file: string;
      attr?: string;
      substituters?: Array<string>;
    }): Promise<JsonValue>;
    /** Copy pinned store paths in from a configured, signature-checked substituter (dangerous: may need several signers). Capability `nix.copy-in`. */
    "copy-in"?(args: {
      paths: Array<string>;
      from: string;
    }): Promise<JsonValue>;
    /** Copy store paths' closures to a binary-cache directory under the export root (signed when a key is configured). Capability `nix.copy-out`. */
    "copy-out"?(args: {
      paths: Array<string>;
      to: string;
    }): Promise<JsonValue>;
    /** List a profile's generations. Capability `nix.generations`. */
    generations?(args: {
      profile: string;
    }): Promise<JsonValue>;
    /** Roll a profile back to its previous generation (dangerous: may need several signers). Capability `nix.profile-rollback`. */
    "profile-rollback"?(args: {
      profile: string;
    }): Promise<JsonValue>;
    /** Point a profile at a pinned store path (a new generation) (dangerous: may need several signers). Capability `nix.profile-set`. */
    "profile-set"?(args: {
      profile: string;
      path: string;
    }): Promise<JsonValue>;
    /** Switch the system to a pinned generation, health-gated: activate, check, then make it the default or roll back (dangerous: may need several signers). Capability `nix.switch`. */
    switch?(args: {
      profile: string;
      path: string;
      healthCheck: {
        argv: Array<string>;
        timeoutMs?: number;
      };
      activationTimeoutMs?: number;
    }): Promise<JsonValue>;
  };
  random?: {
    /** Read up to 1024 random bytes, hex encoded (scripts have no randomness unless granted). Capability `random.bytes`. */
    bytes?(args: {
      n: number;
    }): Promise<JsonValue>;
  };
  time?: {
    /** Read the wall clock (scripts have no clock unless granted). Capability `time.now`. */
    now?(args?: Record<string, never>): Promise<JsonValue>;
    /** Sleep for up to 60 s (counts against the job deadline). Capability `time.sleep`. */
    sleep?(args: {
      ms: number;
    }): Promise<JsonValue>;
  };
  vm?: {
    /** Boot a created or shut-down VM (no-op when running). Capability `vm.boot`. */
    boot?(args: {
      name: string;
    }): Promise<JsonValue>;
    /** Create a VM from a spec (idempotent by name; a different spec under the same name is a conflict). Capability `vm.create`. */
    create?(args: {
      name: string;
      vcpus: number;
      maxVcpus?: number;
      memoryMiB: number;
      maxMemoryMiB?: number;
      kernel?: string;
      initramfs?: string;
      cmdline?: string;
      firmware?: string;
      disks?: Array<{
        id?: string;
        path: string;
        readonly?: boolean;
      }>;
      nics?: Array<{
        id?: string;
        tap: string;
        mac: string;
      }>;
    }): Promise<JsonValue>;
    /** Stop a VM and remove its state directory (disk images are left to their owner) (dangerous: may need several signers). Capability `vm.delete`. */
    delete?(args: {
      name: string;
    }): Promise<JsonValue>;
    device?: {
      /** Detach a disk or NIC by id (no-op when absent). Capability `vm.device.remove`. */
      remove?(args: {
        name: string;
        id: string;
      }): Promise<JsonValue>;
    };
    disk?: {
      /** Attach a disk image (hot-plugged when the VM runs, kept in the spec for later boots). Capability `vm.disk.add`. */
      add?(args: {
        name: string;
        disk: {
          id?: string;
          path: string;
          readonly?: boolean;
        };
      }): Promise<JsonValue>;
    };
    /** Read a VM's state, spec, devices and paths. Capability `vm.info`. */
    info?(args: {
      name: string;
    }): Promise<JsonValue>;
    /** List VMs on this node with their states. Capability `vm.list`. */
    list?(args?: Record<string, never>): Promise<JsonValue>;
    net?: {
      /** Attach a NIC on an existing tap (hot-plugged when the VM runs, kept in the spec). Capability `vm.net.add`. */
      add?(args: {
        name: string;
        nic: {
          id?: string;
          tap: string;
          mac: string;
        };
      }): Promise<JsonValue>;
    };
    /** Pause a running VM (no-op when paused). Capability `vm.pause`. */
    pause?(args: {
      name: string;
    }): Promise<JsonValue>;
    /** Reset a running VM. Capability `vm.reboot`. */
    reboot?(args: {
      name: string;
    }): Promise<JsonValue>;
    /** Change vCPUs and/or memory within the maxima of the spec. Capability `vm.resize`. */
    resize?(args: {
      name: string;
      vcpus?: number;
      memoryMiB?: number;
    }): Promise<JsonValue>;
    /** Replace a VM's running state with a saved snapshot, optionally resuming it. Capability `vm.restore`. */
    restore?(args: {
      name: string;
      snapshot: string;
      resume?: boolean;
    }): Promise<JsonValue>;
    /** Resume a paused VM (no-op when running). Capability `vm.resume`. */
    resume?(args: {
      name: string;
    }): Promise<JsonValue>;
    serial?: {
      /** Wait until a marker string appears on the VM's serial log since its last boot (or since the log began). Capability `vm.serial.wait`. */
      wait?(args: {
        name: string;
        marker: string;
        timeoutMs: number;
        fromStart?: boolean;
      }): Promise<JsonValue>;
    };
    /** Shut a VM down: ACPI power button first (unless graceful is false), forced after timeoutMs (no-op when already down). Capability `vm.shutdown`. */
    shutdown?(args: {
      name: string;
      graceful?: boolean;
      timeoutMs?: number;
    }): Promise<JsonValue>;
    /** Save a VM's running state under its state directory (idempotent by snapshot name). Capability `vm.snapshot`. */
    snapshot?(args: {
      name: string;
      snapshot: string;
    }): Promise<JsonValue>;
  };
}

export interface WritLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface WritContext {
  log: WritLog;
  sal: WritSal;
}

/** The shape of a Writ script: `export default async function (args, ctx) { ... }`. */
export type WritScript = (args: JsonValue, ctx: WritContext) => Promise<JsonValue | void>;
