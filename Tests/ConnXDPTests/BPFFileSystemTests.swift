import ConnCore
import ConnXDP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Mounting bpffs where a fresh machine has none. Each mounting test runs on a thread of its own that first
/// leaves the host's mount namespace (`unshare(CLONE_NEWNS)`, then every mount made private), so what it mounts
/// never reaches the host and disappears with the thread.
@Suite("bpffs")
struct BPFFileSystemTests {
    @Test("The mount point: /sys/fs/bpf for pin directories under it, the pin directory itself elsewhere", arguments: [
        ("/sys/fs/bpf/conntrackr", "/sys/fs/bpf"),
        ("/sys/fs/bpf", "/sys/fs/bpf"),
        ("/sys/fs/bpf//a/b/", "/sys/fs/bpf"),
        ("/sys/fs/bpfx/pins", "/sys/fs/bpfx/pins"),
        ("/run/conntrackr/bpf/", "/run/conntrackr/bpf"),
    ])
    func mountPoint(pinRoot: String, expected: String) {
        #expect(BPFFileSystem.mountPoint(forPinRoot: pinRoot) == expected)
    }

    @Test("A relative pin directory is refused with the fix")
    func relative() {
        let error = #expect(throws: ConntrackrError.self) { try BPFFileSystem.ensureMounted(forPinRoot: "pins") }
        #expect(error?.message.contains("absolute path") == true)
    }

    @Test(
        "With no bpffs at /sys/fs/bpf, it is mounted there and the program's maps pin in it; the host's is untouched",
        .enabled(if: geteuid() == 0, "mounting needs root")
    )
    func mountsAtSystemPlace() throws {
        let before = try HostMount.of("/sys/fs/bpf")
        let pinRoot = "/sys/fs/bpf/conntrackr-test-mount-\(getpid())"
        try inPrivateMountNamespace { () throws in
            // A fresh machine: whatever is at /sys/fs/bpf is hidden under an empty tmpfs.
            guard mount("none", "/sys/fs/bpf", "tmpfs", 0, "size=64k") == 0 else {
                throw ConntrackrError(.kernelUnsupported, "tmpfs over /sys/fs/bpf: \(String(cString: strerror(errno)))")
            }
            #expect(try !BPFFileSystem.isMounted(at: pinRoot))
            #expect(try BPFFileSystem.ensureMounted(forPinRoot: pinRoot) == .mounted(at: "/sys/fs/bpf"))
            #expect(try BPFFileSystem.isMounted(at: pinRoot))
            #expect(try BPFFileSystem.ensureMounted(forPinRoot: pinRoot) == .alreadyMounted)
            // The agent's next step works: the program loads and its maps are pinned in the new bpffs.
            let maps = try PinnedBlockMaps(pinRoot: pinRoot, createIfMissing: true)
            #expect(try maps.blockEntries().isEmpty)
            #expect(access(pinRoot, F_OK) == 0)
        }
        #expect(try HostMount.of("/sys/fs/bpf") == before)
        #expect(access(pinRoot, F_OK) != 0, "the pins went to the private bpffs, not the host's")
    }

    @Test(
        "A pin directory elsewhere gets bpffs mounted on itself, only when empty",
        .enabled(if: geteuid() == 0, "mounting needs root")
    )
    func mountsOnEmptyPinDirectory() throws {
        var template = Array("/tmp/ctr-bpffs-test-XXXXXX".utf8CString)
        guard let base = mkdtemp(&template).map({ String(cString: $0) }) else {
            throw ConntrackrError(.invalidConfiguration, "mkdtemp failed")
        }
        let fresh = base + "/fresh/pins"
        let occupied = base + "/occupied"
        mkdir(occupied, 0o700)
        close(open(occupied + "/keep", O_CREAT | O_WRONLY, 0o600))
        defer {
            unlink(occupied + "/keep")
            for directory in [occupied, fresh, base + "/fresh", base] { rmdir(directory) }
        }
        let before = try HostMount.of(base)
        try inPrivateMountNamespace { () throws in
            #expect(try BPFFileSystem.ensureMounted(forPinRoot: fresh) == .mounted(at: fresh))
            #expect(try BPFFileSystem.isMounted(at: fresh + "/conntrackr"))
            do throws(ConntrackrError) {
                try BPFFileSystem.ensureMounted(forPinRoot: occupied)
                Issue.record("bpffs was mounted over \(occupied), which holds a file")
            } catch {
                let message = error.message
                if !message.contains("holds files") { Issue.record("unexpected refusal: \(message)") }
            }
            #expect(try !BPFFileSystem.isMounted(at: occupied))
        }
        #expect(try HostMount.of(base) == before)
        #expect(try !BPFFileSystem.isMounted(at: fresh))
    }
}

/// What identifies a mount as the host sees it: the filesystem type and device of a path, and the mount points at
/// or under it that `/proc/self/mountinfo` lists.
struct HostMount: Hashable {
    var type: UInt32
    var device: UInt64
    var mountPoints: [String]

    static func of(_ path: String) throws -> HostMount {
        let type = try BPFFileSystem.fileSystemType(of: path)
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw ConntrackrError(.kernelUnsupported, "cannot inspect \(path)")
        }
        let mountinfo = String(decoding: try TextFile.contents(of: "/proc/self/mountinfo"), as: UTF8.self)
        // The fifth field of a line is its mount point.
        let points = mountinfo.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4])
            return point == path || point.hasPrefix(path + "/") ? point : nil
        }
        return HostMount(type: type, device: UInt64(status.st_dev), mountPoints: points.sorted())
    }
}

/// Runs `body` on a new thread that has left the process's mount namespace for a private copy of it (mount
/// propagation off, so nothing mounted there reaches the host). The namespace, and every mount made in it, ends
/// with the thread.
func inPrivateMountNamespace(_ body: @escaping @Sendable () throws -> Void) throws {
    final class Work: @unchecked Sendable {
        // @unchecked: written by the thread before it ends, read after pthread_join.
        let body: @Sendable () throws -> Void
        var failure: (any Error)?
        init(_ body: @escaping @Sendable () throws -> Void) { self.body = body }
    }
    let work = Work(body)
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { context in
            let work = Unmanaged<Work>.fromOpaque(context!).takeUnretainedValue()
            do {
                guard unshareMountNamespace() == 0 else {
                    throw ConntrackrError(.missingPrivilege, "unshare(CLONE_NEWNS): \(String(cString: strerror(errno)))")
                }
                guard mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0 else {
                    throw ConntrackrError(.missingPrivilege, "making mounts private: \(String(cString: strerror(errno)))")
                }
                try work.body()
            } catch {
                work.failure = error
            }
            return nil
        }, Unmanaged.passUnretained(work).toOpaque()
    )
    guard created == 0 else { throw ConntrackrError(.invalidConfiguration, "pthread_create: \(created)") }
    pthread_join(thread, nil)
    if let failure = work.failure { throw failure }
}

/// `unshare(CLONE_NEWNS)`: Swift's Glibc module leaves `unshare` out (it needs `_GNU_SOURCE`), so it is looked up
/// in the C library at run time.
private func unshareMountNamespace() -> Int32 {
    typealias Unshare = @convention(c) (Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "unshare") else {
        errno = ENOSYS
        return -1
    }
    let cloneNewNS: Int32 = 0x0002_0000  // CLONE_NEWNS
    return unsafeBitCast(symbol, to: Unshare.self)(cloneNewNS)
}
