import ConnCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a finished command left behind.
struct CommandResult: Hashable, Sendable {
    /// The exit status, or 128 plus the signal number when a signal ended the command.
var status: Int32
var standardOutput: [UInt8]
var standardError: [UInt8]

init(status: Int32, standardOutput: [UInt8] = [], standardError: [UInt8] = []) {
        self.status = status
        self.standardOutput = standardOutput
        self.standardError = standardError
    }
}

/// Runs external commands for these tests' lab helpers (`ip netns`, `nft` to look at what a blocker did). The agent
/// itself starts no process: its nftables changes go through libnftables.
protocol CommandRunner: Sendable {
    /// Runs `arguments[0]` (a bare name is looked up in the system's program directories, never on the inherited
    /// `PATH`) with the other arguments and `input` on its standard input, and waits for it at most `timeout`
    /// before killing it.
    /// - Throws: ``ConntrackrError`` (`blockerFailed`) when the command cannot start or runs out of time; a
    ///   command that runs and fails is a result with a non-zero status, not an error.
    func run(_ arguments: [String], input: [UInt8], timeout: Duration) throws(ConntrackrError) -> CommandResult
}

/// Runs commands with `posix_spawn`, by absolute path and with a minimal environment.
///
/// The agent runs as root and its environment carries secrets (`CONNTRACKR_FLEET_PASSWORD`) and whatever `PATH`
/// it was started with. So a bare command name is resolved once, to the first executable regular file of that
/// name in ``searchPath`` (`nft` is then `/usr/sbin/nft`), and the command gets ``environment`` only.
///
/// Standard input, output and error are anonymous memory files (`memfd_create`) rather than pipes: the whole
/// script is written before the command starts and its output is read after it ends, so there is no pipe to fill
/// up, no `SIGPIPE` when the command exits early, and no reader thread. Meant for commands with modest output
/// (an nftables listing is a few megabytes at most); output beyond 64 MiB is an error.
struct SpawnCommandRunner: CommandRunner {
    /// The directories a bare command name is looked up in, in order: the system's, never the inherited `PATH`.
static let searchPath = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    /// The whole environment a command gets: nothing of the agent's own.
static let environment = ["PATH=" + searchPath.joined(separator: ":"), "LANG=C"]

    /// Absolute paths of the names resolved so far: each is looked up once.
    private let resolved = ResolvedPrograms()

init() {}

    /// The absolute path `program` runs from: itself when it holds a `/`, else the first executable regular file
    /// of that name in ``searchPath``; `nil` when there is none.
func resolve(_ program: String) -> String? {
        if program.contains("/") { return program }
        return resolved.path(of: program) {
            Self.searchPath.lazy.map { $0 + "/" + program }.first { candidate in
                var status = stat()
                return stat(candidate, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
                    && access(candidate, X_OK) == 0
            }
        }
    }

func run(_ arguments: [String], input: [UInt8], timeout: Duration) throws(ConntrackrError) -> CommandResult {
        guard let program = arguments.first else {
            throw ConntrackrError(.blockerFailed, "no command given to run")
        }
        guard let path = resolve(program) else {
            let directories = Self.searchPath.joined(separator: ":")
            throw ConntrackrError(.blockerFailed, "cannot run \(program): not found in \(directories)")
        }
        let stdin = try MemoryFile(name: "stdin", contents: input)
        let stdout = try MemoryFile(name: "stdout")
        let stderr = try MemoryFile(name: "stderr")

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears close-on-exec on the copies, so the child gets exactly these three.
        posix_spawn_file_actions_adddup2(&actions, stdin.fd, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout.fd, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr.fd, 2)
        if let closeFrom = SystemFunctions.closeFrom {
            // Descriptors other code opened without close-on-exec stay out of the child.
            _ = closeFrom(&actions, 3)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The agent may block or ignore signals (service-lifecycle ignores SIGINT/SIGTERM to handle them itself);
        // a child must start with the defaults, or SIGKILL aside it could not be stopped.
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var cEnvironment: [UnsafeMutablePointer<CChar>?] = Self.environment.map { strdup($0) } + [nil]
        defer { for pointer in cEnvironment { free(pointer) } }
        var pid = pid_t()
        let spawnError = posix_spawn(&pid, path, &actions, &attributes, &cArguments, &cEnvironment)
        guard spawnError == 0 else {
            throw ConntrackrError(.blockerFailed, "cannot run \(path): \(String(cString: strerror(spawnError)))")
        }

        let status = try wait(for: pid, program: program, timeout: timeout)
        return CommandResult(
            status: status,
            standardOutput: try stdout.contents(),
            standardError: try stderr.contents()
        )
    }

    /// Waits for `pid` to exit, polling with a short backoff (commands such as `nft` take milliseconds, and a
    /// blocking `waitpid` could not be bounded in time without a helper thread). Kills it when time is up.
    private func wait(for pid: pid_t, program: String, timeout: Duration) throws(ConntrackrError) -> Int32 {
        let deadline = ContinuousClock.now + timeout
        var pause = Duration.microseconds(200)
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return Self.exitStatus(status) }
            if result < 0 && errno != EINTR {
                throw ConntrackrError(.blockerFailed, "lost track of \(program): \(String(cString: strerror(errno)))")
            }
            if ContinuousClock.now >= deadline {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                throw ConntrackrError(.blockerFailed, "\(program) did not finish within \(timeout); killed it")
            }
            var request = timespec(tv_sec: 0, tv_nsec: Int(pause.components.attoseconds / 1_000_000_000))
            nanosleep(&request, nil)
            pause = min(pause * 2, .milliseconds(10))
        }
    }

    /// `WIFEXITED`/`WEXITSTATUS`/`WTERMSIG`, which are macros Swift cannot import.
    private static func exitStatus(_ status: Int32) -> Int32 {
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }
}

/// The absolute paths of command names, each looked up once.
private final class ResolvedPrograms: Sendable {
    private let paths = Mutex<[String: String]>([:])

    func path(of name: String, lookUp: () -> String?) -> String? {
        if let known = paths.withLock({ $0[name] }) { return known }
        // Not cached when missing: the package may be installed while the agent runs.
        guard let found = lookUp() else { return nil }
        paths.withLock { $0[name] = found }
        return found
    }
}

/// An anonymous file in memory, closed when released.
private final class MemoryFile {
    let fd: Int32
    private let name: String

    init(name: String, contents: [UInt8] = []) throws(ConntrackrError) {
        self.name = name
        guard let create = SystemFunctions.memfdCreate else {
            throw ConntrackrError(.kernelUnsupported, "memfd_create is not available in this C library")
        }
        let fd = create("conntrackr-\(name)", SystemFunctions.memfdCloseOnExec)
        guard fd >= 0 else {
            throw ConntrackrError(.blockerFailed, "memfd_create: \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        var offset = 0
        while offset < contents.count {
            let written = contents[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw ConntrackrError(.blockerFailed, "cannot write command input: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
        // Rewind so that a child reading descriptor 0 directly starts at the beginning (nft opens /dev/stdin,
        // which reopens the file, but other commands read the descriptor as it is).
        lseek(fd, 0, SEEK_SET)
    }

    deinit { close(fd) }

    /// Everything written to the file, from its start.
    func contents() throws(ConntrackrError) -> [UInt8] {
        let limit = 64 << 20
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var offset = 0
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ConntrackrError(
                    .blockerFailed,
                    "cannot read command \(name): \(String(cString: strerror(errno)))"
                )
            }
            if count == 0 { return buffer }
            guard buffer.count + count <= limit else {
                throw ConntrackrError(.blockerFailed, "command \(name) exceeded \(limit >> 20) MiB")
            }
            buffer.append(contentsOf: chunk[0..<count])
            offset += count
        }
    }
}

/// glibc functions that Swift's Glibc module does not declare (it is built without `_GNU_SOURCE`), looked up
/// once at run time.
private enum SystemFunctions {
    typealias MemfdCreate = @convention(c) (UnsafePointer<CChar>, UInt32) -> Int32
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// `MFD_CLOEXEC` from <linux/memfd.h>.
    static let memfdCloseOnExec: UInt32 = 1

    static let memfdCreate: MemfdCreate? = lookup("memfd_create")
    /// `posix_spawn_file_actions_addclosefrom_np`, glibc 2.34 and later.
    static let closeFrom: CloseFrom? = lookup("posix_spawn_file_actions_addclosefrom_np")

    private static func lookup<Function>(_ symbol: String) -> Function? {
        // RTLD_DEFAULT is the null handle on glibc.
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), symbol) else { return nil }
        return unsafeBitCast(address, to: Function.self)
    }
}
