import ConnFleet
import ConnTesting
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd for integration tests: Debian's `etcd` on 127.0.0.1, free ports, a temporary data directory.
///
/// `stop()` and `start()` again keep the data directory and ports, as a restarted server would. `close()` kills it
/// and removes the directory; call it in a `defer`.
final class EtcdServer: @unchecked Sendable {
    // @unchecked: the process handle is only touched by the test that owns the server, one call at a time.
    static let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static let etcdctl = ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// Why integration tests cannot run here, or `nil` when they can.
    static var unavailableReason: String? {
        guard binary != nil, etcdctl != nil else {
            return "etcd is not installed (apt-get install etcd-server etcd-client; `make test` does it)"
        }
        return nil
    }

    /// PEM files of a throwaway CA, a server certificate for 127.0.0.1 and a client certificate, when the server
    /// runs with TLS and client certificate authentication.
    struct Certificates {
        let ca: String
        let serverCertificate: String
        let serverKey: String
        let clientCertificate: String
        let clientKey: String
    }

    let directory: URL
    let clientPort: UInt16
    let peerPort: UInt16
    private(set) var certificates: Certificates?
    private var process: Process?

    var endpoint: String { "\(certificates == nil ? "http" : "https")://127.0.0.1:\(clientPort)" }

    /// The configuration a client of this server needs (TLS files when the server uses TLS).
    var clientConfiguration: EtcdConfiguration {
        EtcdConfiguration(
            endpoints: [endpoint],
            tls: certificates.map {
                .init(caFile: $0.ca, certificateFile: $0.clientCertificate, keyFile: $0.clientKey)
            },
            requestTimeout: .seconds(1)
        )
    }

    /// Makes certificates with openssl (a CA, then server and client certificates it signs) so that `start()`
    /// serves https and requires client certificates.
    func enableTLS() throws {
        let dir = directory.path
        let script = """
            set -e
            cd '\(dir)'
            key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@" 2>/dev/null; }
            key -x509 -keyout ca.key -out ca.pem -days 1 -subj /CN=conntrackr-test-ca
            key -keyout server.key -out server.csr -subj /CN=127.0.0.1
            key -keyout client.key -out client.csr -subj /CN=conntrackr-agent
            printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            for who in server client; do
              openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \\
                -extfile $who.ext -out $who.pem 2>/dev/null
            done
            """
        try run("/bin/sh", ["-c", script])
        certificates = Certificates(
            ca: "\(dir)/ca.pem",
            serverCertificate: "\(dir)/server.pem",
            serverKey: "\(dir)/server.key",
            clientCertificate: "\(dir)/client.pem",
            clientKey: "\(dir)/client.key"
        )
    }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "conntrackr-etcd-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        clientPort = try freePort()
        var peer = try freePort()
        while peer == clientPort { peer = try freePort() }
        peerPort = peer
    }

    /// Starts etcd and waits until it answers (30 seconds at most).
    func start() async throws {
        guard let binary = Self.binary else { throw FleetError(.unavailable, Self.unavailableReason!) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        let peer = "http://127.0.0.1:\(peerPort)"
        process.arguments = [
            "--name", "test", "--data-dir", directory.appendingPathComponent("data").path,
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "test=\(peer)", "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", directory.appendingPathComponent("etcd.log").path,
        ]
        if let certificates {
            process.arguments! += [
                "--cert-file", certificates.serverCertificate, "--key-file", certificates.serverKey,
                "--trusted-ca-file", certificates.ca, "--client-cert-auth",
            ]
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let ready = try await withEtcdStore(clientConfiguration) { probe in
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(30)
            while clock.now < deadline, process.isRunning {
                if (try? await probe.checkHealth()) != nil { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return false
        }
        guard !ready else { return }
        let log = (try? String(contentsOf: directory.appendingPathComponent("etcd.log"), encoding: .utf8)) ?? ""
        stop()
        throw FleetError(.unavailable, "etcd did not start on \(endpoint): \(log.suffix(2000))")
    }

    /// Stops etcd (SIGKILL, as a crash or a pulled cable would) and waits for it to exit.
    func stop() {
        guard let process, process.isRunning else {
            self.process = nil
            return
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// Stops etcd and removes its data directory.
    func close() {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `etcdctl` against this server; returns its standard output, or throws with its error output.
    @discardableResult
    func etcdctl(_ arguments: [String]) throws -> String {
        guard let etcdctl = Self.etcdctl else { throw FleetError(.unavailable, "etcdctl is not installed") }
        return try run(etcdctl, ["--endpoints", endpoint] + arguments)
    }

    /// Runs a program; returns its standard output, or throws with its error output.
    @discardableResult
    private func run(_ program: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.environment = ["ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FleetError(.rejected, "\(program) \(arguments.joined(separator: " ")) failed: \(errorText)")
        }
        return text
    }
}

/// A TCP port on 127.0.0.1 nobody listens on right now (the kernel picks it).
func freePort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw FleetError(.unavailable, "socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
            bind(fd, raw, length) == 0 && getsockname(fd, raw, &length) == 0
        }
    }
    guard bound else { throw FleetError(.unavailable, "bind: errno \(errno)") }
    return UInt16(bigEndian: address.sin_port)
}

/// Runs `body` with an etcd store, and shuts the store down however `body` ends.
@discardableResult
func withEtcdStore<T>(
    _ configuration: EtcdConfiguration,
    _ body: (EtcdStore) async throws -> T
) async throws -> T {
    let store = try EtcdStore(configuration: configuration)
    do {
        let result = try await body(store)
        try await store.shutdown()
        return result
    } catch {
        try? await store.shutdown()
        throw error
    }
}
