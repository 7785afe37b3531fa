// Generated from the capability registry by `npm run gen:docs`. Do not edit.
// Type your deployment scripts against it: /** @param {WritContext} ctx */ or `import type` in TS.

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Host functions granted to the script. Only capabilities listed in the envelope's `caps` are present. */
export interface WritSal {
  btrfs?: {
    disk?: {
      /** Clone a VM disk: a writable snapshot of a base image subvolume at <dir>/<name>, O(1) in the disk's size. Capability `btrfs.disk.clone`. */
      clone?(args: {
        base: string;
        name: string;
        file?: string;
        dir?: string;
      }): Promise<JsonValue>;
    };
    pool?: {
      /** Format an image file (created sparse) or a configured block device as btrfs; an existing btrfs with the same label is kept (dangerous: may need several signers). Capability `btrfs.pool.format`. */
      format?(args?: {
        image?: string;
        device?: string;
        sizeBytes?: number;
        label?: string;
        force?: boolean;
      }): Promise<JsonValue>;
      /** Attach the pool (image files through a loop device) and mount it at the configured pool root. Capability `btrfs.pool.mount`. */
      mount?(args?: {
        image?: string;
        device?: string;
      }): Promise<JsonValue>;
      /** Unmount the pool root and detach its loop device (dangerous: may need several signers). Capability `btrfs.pool.unmount`. */
      unmount?(args?: {
        detach?: boolean;
      }): Promise<JsonValue>;
    };
    qgroup?: {
      /** Set (or clear with null) a subvolume's referenced/exclusive size limit; enables quotas on the pool if needed. Capability `btrfs.qgroup.limit`. */
      limit?(args: {
        path: string;
        maxReferencedBytes?: number | null;
        maxExclusiveBytes?: number | null;
      }): Promise<JsonValue>;
      /** Show quota groups (usage and limits) of the pool or of one subvolume. Capability `btrfs.qgroup.show`. */
      show?(args?: {
        path?: string;
      }): Promise<JsonValue>;
    };
    /** Receive a send stream file into a directory of the pool. Capability `btrfs.receive`. */
    receive?(args: {
      stream: string;
      dir: string;
    }): Promise<JsonValue>;
    /** Write a read-only subvolume as a send stream file under the stream directory (incremental with parent). Capability `btrfs.send`. */
    send?(args: {
      path: string;
      stream: string;
      parent?: string;
    }): Promise<JsonValue>;
    /** Snapshot a subvolume (read-only by default, or writable). Capability `btrfs.snapshot`. */
    snapshot?(args: {
      source: string;
      dest: string;
      readOnly?: boolean;
    }): Promise<JsonValue>;
    subvolume?: {
      /** Create a subvolume if missing. Capability `btrfs.subvolume.create`. */
      create?(args: {
        path: string;
      }): Promise<JsonValue>;
      /** Delete a subvolume and every subvolume nested in it, deepest first (dangerous: may need several signers). Capability `btrfs.subvolume.delete`. */
      delete?(args: {
        path: string;
      }): Promise<JsonValue>;
      /** List subvolumes (optionally only those under a path). Capability `btrfs.subvolume.list`. */
      list?(args?: {
        under?: string;
      }): Promise<JsonValue>;
      /** Show one subvolume: ids, UUIDs, flags, snapshots. Capability `btrfs.subvolume.show`. */
      show?(args: {
        path: string;
      }): Promise<JsonValue>;
    };
    /** Read the pool space usage in bytes. Capability `btrfs.usage`. */
    usage?(args?: Record<string, never>): Promise<JsonValue>;
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
    addr?: {
      /** Add an address to a link if missing (dangerous: may need several signers). Capability `net.addr.add`. */
      add?(args: {
        dev: string;
        address: string;
        netns?: string;
      }): Promise<JsonValue>;
      /** Remove an address from a link (dangerous: may need several signers). Capability `net.addr.delete`. */
      delete?(args: {
        dev: string;
        address: string;
        netns?: string;
      }): Promise<JsonValue>;
    };
    bridge?: {
      /** Delete a bridge (its ports are released) (dangerous: may need several signers). Capability `net.bridge.delete`. */
      delete?(args: {
        name: string;
        netns?: string;
      }): Promise<JsonValue>;
      /** Create a bridge if missing and bring it up. Capability `net.bridge.ensure`. */
      ensure?(args: {
        name: string;
        netns?: string;
        up?: boolean;
      }): Promise<JsonValue>;
    };
    link?: {
      /** List links with their kind, state, master and addresses. Capability `net.link.list`. */
      list?(args?: {
        netns?: string;
      }): Promise<JsonValue>;
      /** Set a link up or down, attach it to a bridge (master) or release it (null), change its MTU (dangerous: may need several signers). Capability `net.link.set`. */
      set?(args: {
        name: string;
        netns?: string;
        up?: boolean;
        master?: string | null;
        mtu?: number;
      }): Promise<JsonValue>;
    };
    netns?: {
      /** Delete a network namespace (dangerous: may need several signers). Capability `net.netns.delete`. */
      delete?(args: {
        name: string;
      }): Promise<JsonValue>;
      /** Create a network namespace if missing (loopback up). Capability `net.netns.ensure`. */
      ensure?(args: {
        name: string;
      }): Promise<JsonValue>;
      /** Run an allowlisted command (argv array) inside a network namespace; returns exit code and output (dangerous: may need several signers). Capability `net.netns.exec`. */
      exec?(args: {
        name: string;
        argv: Array<string>;
        timeoutMs?: number;
      }): Promise<JsonValue>;
      /** List network namespaces. Capability `net.netns.list`. */
      list?(args?: Record<string, never>): Promise<JsonValue>;
    };
    route?: {
      /** Add a route through a link if missing (dangerous: may need several signers). Capability `net.route.add`. */
      add?(args: {
        destination: string;
        via?: string;
        dev: string;
        metric?: number;
        netns?: string;
      }): Promise<JsonValue>;
      /** Delete a route through a link (dangerous: may need several signers). Capability `net.route.delete`. */
      delete?(args: {
        destination: string;
        via?: string;
        dev: string;
        metric?: number;
        netns?: string;
      }): Promise<JsonValue>;
      /** List routes of the main table. Capability `net.route.list`. */
      list?(args?: {
        netns?: string;
        family?: "inet" | "inet6";
      }): Promise<JsonValue>;
    };
    tap?: {
      /** Delete a tap (dangerous: may need several signers). Capability `net.tap.delete`. */
      delete?(args: {
        name: string;
        netns?: string;
      }): Promise<JsonValue>;
      /** Create a persistent tap owned by a uid if missing, attach it to a bridge and bring it up. Capability `net.tap.ensure`. */
      ensure?(args: {
        name: string;
        netns?: string;
        owner?: number;
        bridge?: string;
        multiQueue?: boolean;
        vnetHdr?: boolean;
        up?: boolean;
      }): Promise<JsonValue>;
    };
    veth?: {
      /** Delete a veth pair (by either end) (dangerous: may need several signers). Capability `net.veth.delete`. */
      delete?(args: {
        name: string;
        netns?: string;
      }): Promise<JsonValue>;
      /** Create a veth pair if missing, each end in its namespace, and bring both up. Capability `net.veth.ensure`. */
      ensure?(args: {
        name: string;
        peer: string;
        netns?: string;
        peerNetns?: string;
        up?: boolean;
      }): Promise<JsonValue>;
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
  /** The job this run belongs to and its attempt number (1 for the first run; a retry counts up). A flow step's job id is `<flow>.<step>` (and `.<node>` for a fan-out step). */
  job: { readonly id: string; readonly attempt: number };
}

/** The shape of a Writ script: `export default async function (args, ctx) { ... }`. */
export type WritScript = (args: JsonValue, ctx: WritContext) => Promise<JsonValue | void>;
