import ConnBlock
import ConnCore
import ConnTesting
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A network namespace created for one test, named `ctr-ROLE-SUFFIX` with a per-run suffix. Call ``remove()``
/// in a `defer`: deleting the namespace also deletes its links and its nftables tables.
final class NetworkNamespace: Sendable {
    let name: String

    init(_ role: String) throws {
        name = "ctr-\(role)-\(runSuffix())"
        try shell(["ip", "netns", "add", name])
        do {
            try exec(["ip", "link", "set", "lo", "up"])
        } catch {
            remove()
            throw error
        }
    }

    /// The file that holds the namespace open, for ``NftablesBlocker/Configuration/networkNamespace``.
    var path: String { "/run/netns/\(name)" }

    /// Runs a command inside the namespace; a non-zero exit throws.
    @discardableResult
    func exec(_ arguments: [String], timeout: Duration = .seconds(10)) throws -> String {
        try shell(["ip", "netns", "exec", name] + arguments, timeout: timeout)
    }

    func remove() {
        _ = try? SpawnCommandRunner().run(["ip", "netns", "del", name], input: [], timeout: .seconds(10))
    }
}

/// A victim namespace (203.0.113.1, 2001:db8:0:1::1) and a peer namespace holding `sources`, joined by a veth pair
/// created inside the victim namespace, so that nothing ever appears in the host's own. Call ``remove()`` in a
/// `defer`.
struct VethLab {
    let victim: NetworkNamespace
    let peer: NetworkNamespace
    /// The victim's end of the pair.
    let victimLink: String

    init(_ role: String, sources: [String]) throws {
        victim = try NetworkNamespace("\(role)v")
        do {
            peer = try NetworkNamespace("\(role)p")
        } catch {
            victim.remove()
            throw error
        }
        let suffix = runSuffix()
        victimLink = "ctr-v\(suffix)"
        let peerLink = "ctr-p\(suffix)"
        do {
            try victim.exec(["ip", "link", "add", victimLink, "type", "veth", "peer", "name", peerLink, "netns", peer.name])
            try victim.exec(["ip", "addr", "add", "203.0.113.1/24", "dev", victimLink])
            try victim.exec(["ip", "-6", "addr", "add", "2001:db8:0:1::1/64", "dev", victimLink, "nodad"])
            try victim.exec(["ip", "link", "set", victimLink, "up"])
            try victim.exec(["ip", "-6", "route", "add", "2001:db8::/32", "dev", victimLink])
            for source in sources {
                let family = source.contains(":") ? ["-6"] : []
                try peer.exec(["ip"] + family + ["addr", "add", source, "dev", peerLink] + (family.isEmpty ? [] : ["nodad"]))
            }
            try peer.exec(["ip", "link", "set", peerLink, "up"])
            try peer.exec(["ip", "-6", "route", "add", "2001:db8::/32", "dev", peerLink])
        } catch {
            remove()
            throw error
        }
    }

    func remove() {
        peer.remove()
        victim.remove()
    }
}

/// A command left running in the background (a listener), stopped by ``stop()`` and in any case by `timeout`.
///
/// Spawned directly rather than with Foundation's `Process`, which passes the spawning thread's signal mask on:
/// the test runner's threads block most signals, and a `timeout` started that way can neither time out nor be
/// terminated.
final class BackgroundCommand {
    private let pid: pid_t

    init(_ arguments: [String], limit: Duration = .seconds(60)) throws {
        let full = ["timeout", "\(limit.components.seconds)"] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var cArguments: [UnsafeMutablePointer<CChar>?] = full.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid = pid_t()
        let error = posix_spawnp(&pid, "timeout", &actions, &attributes, &cArguments, environ)
        guard error == 0 else { throw LabError("cannot start \(full): \(String(cString: strerror(error)))") }
        self.pid = pid
    }

    /// Stops the command (SIGTERM, then SIGKILL after two seconds) and reaps it.
    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<200 {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleepMilliseconds(10)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }
}

/// Tries a TCP connect from each source address to `destination:port` at once (one Python process, one thread
/// per source) and tells, per source, `open`, or the error (`TimeoutError` when SYNs were dropped,
/// `ConnectionRefusedError` when the host answered with a reset).
func connectResults(
    in namespace: NetworkNamespace,
    from sources: [String],
    to destinations: [String],
    port: Int
) throws -> [String: String] {
    let probe = """
        import concurrent.futures, json, socket, sys
        port = int(sys.argv[1])
        pairs = [arg.split(",") for arg in sys.argv[2:]]
        def attempt(pair):
            source, destination = pair
            family = socket.AF_INET6 if ":" in destination else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(1.5)
            try:
                s.bind((source, 0))
                s.connect((destination, port))
                return "open"
            except OSError as error:
                return type(error).__name__
            finally:
                s.close()
        with concurrent.futures.ThreadPoolExecutor(len(pairs)) as pool:
            print(json.dumps(dict(zip([p[0] for p in pairs], pool.map(attempt, pairs)))))
        """
    let pairs = zip(sources, destinations).map { "\($0),\($1)" }
    let output = try namespace.exec(
        ["timeout", "10", "python3", "-c", probe, String(port)] + pairs,
        timeout: .seconds(15)
    )
    guard let results = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: String] else {
        throw LabError("unexpected probe output: \(output)")
    }
    return results
}

func usleepMilliseconds(_ milliseconds: Int) {
    var request = timespec(tv_sec: 0, tv_nsec: milliseconds * 1_000_000)
    nanosleep(&request, nil)
}
