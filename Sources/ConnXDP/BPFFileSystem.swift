import CXDP
public import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// bpffs, the filesystem conntrackr's maps are pinned in (so blocks outlive the agent): finding it under a pin
/// directory, and mounting it where a fresh machine has none.
///
/// Where it is mounted, when the pin directory is not on bpffs:
/// - a pin directory at or under `/sys/fs/bpf` (the default, `/sys/fs/bpf/conntrackr`): bpffs is mounted at
///   `/sys/fs/bpf` itself, as systemd does at boot (`mode=0700`, `nosuid,nodev,noexec`), so other BPF tools
///   find it where they expect;
/// - a pin directory elsewhere (`/run/conntrackr/bpf`): bpffs is mounted on the pin directory itself, created if
///   missing, and only if it is empty. Mounting on its parent instead could hide files that have nothing to do
///   with conntrackr; an empty pin directory hides nothing.
///
/// The mount is left in place when the agent exits: the pins in it are what keeps blocks across restarts.
/// - Important: Mounting needs `CAP_SYS_ADMIN`. It happens in the caller's mount namespace: a container or a
///   systemd unit with private mounts gets a bpffs of its own, not the host's.
public enum BPFFileSystem: Sendable {
    /// `statfs`'s `f_type` of bpffs (`BPF_FS_MAGIC`).
    public static let magic: UInt32 = 0xcafe_4a11

    /// Where systemd mounts bpffs at boot.
    public static let systemMountPoint = "/sys/fs/bpf"

    /// What ``ensureMounted(forPinRoot:)`` found or did.
    public enum Outcome: Hashable, Sendable {
        /// The pin directory is on bpffs already; nothing was done.
        case alreadyMounted
        /// bpffs was mounted at this directory.
        case mounted(at: String)
    }

    /// Whether `path`, or when it does not exist its deepest existing parent (where it would be created), is on
    /// bpffs.
    /// - Throws: ``ConntrackrError`` when a directory on the way cannot be inspected.
    public static func isMounted(at path: String) throws(ConntrackrError) -> Bool {
        try fileSystemType(of: deepestExisting(path)) == magic
    }

    /// Where bpffs would be mounted for `pinRoot` (see ``BPFFileSystem``).
    public static func mountPoint(forPinRoot pinRoot: String) -> String {
        let normalized = normalize(pinRoot)
        return normalized == systemMountPoint || normalized.hasPrefix(systemMountPoint + "/")
            ? systemMountPoint : normalized
    }

    /// Makes sure `pinRoot` is on bpffs, mounting bpffs where ``mountPoint(forPinRoot:)`` says when it is not.
    /// - Throws: ``ConntrackrError`` naming the fix: `.invalidConfiguration` for a relative or non-empty pin
    ///   directory, `.missingPrivilege` without `CAP_SYS_ADMIN`, `.kernelUnsupported` for a kernel without
    ///   bpffs or a system without `/sys/fs/bpf`.
    @discardableResult
    public static func ensureMounted(forPinRoot pinRoot: String) throws(ConntrackrError) -> Outcome {
        guard pinRoot.hasPrefix("/") else {
            throw ConntrackrError(
                .invalidConfiguration, "--pin-dir must be an absolute path on bpffs, not \(pinRoot.debugDescription)"
            )
        }
        if try isMounted(at: pinRoot) { return .alreadyMounted }
        let target = mountPoint(forPinRoot: pinRoot)
        let manual = "`mount -t bpf bpf \(target)`"
        if target == systemMountPoint {
            var status = stat()
            guard stat(target, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR else {
                throw ConntrackrError(
                    .kernelUnsupported,
                    "\(target) does not exist, so bpffs cannot be mounted there (is sysfs mounted at /sys?): "
                        + "mount sysfs and bpffs, or use --source pcap and --block nftables"
                )
            }
            // Something under a bpffs at /sys/fs/bpf is another filesystem: mounting over /sys/fs/bpf would hide
            // every pin on the host.
            if try fileSystemType(of: target) == magic {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "--pin-dir \(pinRoot) is not on the bpffs mounted at \(target): pick a directory on it"
                )
            }
        } else {
            try makeEmptyDirectory(target, manual: manual)
        }
        guard mount("bpf", target, "bpf", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "mode=0700") == 0 else {
            let code = errno
            let reason = String(cString: strerror(code))
            switch code {
            case EPERM, EACCES:
                throw ConntrackrError(
                    .missingPrivilege,
                    "bpffs is not mounted at \(target) and mounting it needs CAP_SYS_ADMIN (\(reason)): run as root, "
                        + "or mount it first with \(manual)"
                )
            case ENODEV:
                throw ConntrackrError(
                    .kernelUnsupported,
                    "this kernel has no bpffs (CONFIG_BPF_SYSCALL): use --source pcap and --block nftables"
                )
            default:
                throw ConntrackrError(
                    .kernelUnsupported, "cannot mount bpffs at \(target): \(reason): mount it with \(manual)"
                )
            }
        }
        guard try isMounted(at: pinRoot) else {
            throw ConntrackrError(
                .kernelUnsupported, "bpffs was mounted at \(target) but \(pinRoot) is still not on it: pick another --pin-dir"
            )
        }
        return .mounted(at: target)
    }

    /// `path` without trailing, repeated or `.` components.
    private static func normalize(_ path: String) -> String {
        "/" + path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
    }

    /// `path`, or its deepest parent that exists.
    private static func deepestExisting(_ path: String) throws(ConntrackrError) -> String {
        var candidate = normalize(path)
        while true {
            var status = stat()
            if stat(candidate, &status) == 0 { return candidate }
            let code = errno
            guard code == ENOENT, candidate != "/" else {
                throw ConntrackrError(
                    .kernelUnsupported, "cannot inspect \(candidate): \(String(cString: strerror(code)))"
                )
            }
            let parent = candidate.split(separator: "/").dropLast().joined(separator: "/")
            candidate = "/" + parent
        }
    }

    /// The type of the filesystem holding `path` (`statfs`'s `f_type`; ``magic`` for bpffs).
    /// - Throws: ``ConntrackrError`` when `path` cannot be inspected (it does not exist, say).
    public static func fileSystemType(of path: String) throws(ConntrackrError) -> UInt32 {
        var type: UInt32 = 0
        let result = ct_filesystem_type(path, &type)
        guard result == 0 else {
            throw ConntrackrError(.kernelUnsupported, "cannot inspect \(path): \(String(cString: strerror(-result)))")
        }
        return type
    }

    /// Creates `path` and its parents (mode 0700) if missing, and checks that it holds nothing.
    private static func makeEmptyDirectory(_ path: String, manual: String) throws(ConntrackrError) {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o700) != 0, errno != EEXIST {
                let code = errno
                throw ConntrackrError(
                    code == EPERM || code == EACCES ? .missingPrivilege : .invalidConfiguration,
                    "cannot create \(prefix) for bpffs: \(String(cString: strerror(code))): create it, or mount "
                        + "bpffs with \(manual)"
                )
            }
        }
        guard let directory = opendir(path) else {
            let code = errno
            throw ConntrackrError(
                .invalidConfiguration,
                "--pin-dir \(path) is not on bpffs and cannot be read (\(String(cString: strerror(code)))): mount bpffs "
                    + "with \(manual)"
            )
        }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "--pin-dir \(path) is not on bpffs and holds files, so bpffs is not mounted over them: mount "
                        + "bpffs with \(manual), or pick an empty or new directory"
                )
            }
        }
    }
}
