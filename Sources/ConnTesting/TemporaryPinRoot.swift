import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// A bpffs directory of its own for one test, so that tests running side by side never share pinned maps.
///
/// Mounts bpffs at `/sys/fs/bpf` first if nothing is mounted there (as on a fresh container). Needs root.
/// ``remove()`` unpins everything in the directory and removes it; call it in a `defer`.
public struct TemporaryPinRoot: Sendable {
    /// The directory's path, under `/sys/fs/bpf`; it is created by whoever pins there first.
    public let path: String

    /// Picks a fresh directory name (`/sys/fs/bpf/conntrackr-test-PID-RANDOM`).
    /// - Throws: ``ConntrackrError`` when bpffs is not mounted and cannot be.
    public init() throws {
        try Self.mountBPFFileSystemIfNeeded()
        path = "/sys/fs/bpf/conntrackr-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    }

    /// Unpins every map and program pinned in the directory and removes it. Missing is fine.
    public func remove() {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink("\(path)/\(name)") }
            }
            closedir(directory)
        }
        rmdir(path)
    }

    private static func mountBPFFileSystemIfNeeded() throws {
        if isBPFFileSystemMounted() { return }
        guard mount("bpf", "/sys/fs/bpf", "bpf", 0, nil) == 0 else {
            throw ConntrackrError(
                .kernelUnsupported,
                "bpffs is not mounted at /sys/fs/bpf and mounting it failed: \(String(cString: strerror(errno)))"
            )
        }
    }

    /// Whether /proc/self/mounts lists a bpf file system at /sys/fs/bpf.
    private static func isBPFFileSystemMounted() -> Bool {
        guard let file = fopen("/proc/self/mounts", "r") else { return false }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(separator: " ")
            if fields.count > 2, fields[1] == "/sys/fs/bpf", fields[2] == "bpf" { return true }
        }
        return false
    }
}
