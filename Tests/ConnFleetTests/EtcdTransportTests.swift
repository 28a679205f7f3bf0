import ConnFleet
import Dispatch
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 13 (f): the store never follows a redirect, which would carry its request (and token) elsewhere.
@Suite("etcd transport")
struct EtcdTransportTests {
    /// A listening TCP socket on 127.0.0.1 and a free port.
    final class Listener: @unchecked Sendable {  // the descriptor is only closed in deinit
        let descriptor: Int32
        let port: UInt16

        init() throws {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.descriptor = descriptor
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0, listen(descriptor, 4) == 0 else {
                port = 0
                throw FleetError(.unavailable, "cannot listen")
            }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
            }
            port = UInt16(bigEndian: address.sin_port)
        }

        deinit { close(descriptor) }

        /// Accepts one connection, reads the request's head, and answers `response`.
        func answerOnce(_ response: String) {
            let connection = accept(descriptor, nil, nil)
            guard connection >= 0 else { return }
            var buffer = [UInt8](repeating: 0, count: 65_536)
            var received: [UInt8] = []
            while !received.containsHeadEnd, received.count < 65_536 {
                let count = read(connection, &buffer, buffer.count)
                if count <= 0 { break }
                received += buffer[..<count]
            }
            let bytes = Array(response.utf8)
            _ = bytes.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
            close(connection)
        }

        /// Whether a connection is waiting to be accepted.
        var hasPendingConnection: Bool {
            var descriptorSet = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            return poll(&descriptorSet, 1, 0) > 0
        }
    }

    @Test func aRedirectIsNotFollowed() async throws {
        let server = try Listener()
        let elsewhere = try Listener()
        let redirect = "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:\(elsewhere.port)/v3/kv/range\r\n"
            + "Content-Length: 0\r\nConnection: close\r\n\r\n"
        DispatchQueue.global().async { server.answerOnce(redirect) }
        let store = try EtcdStore(
            configuration: EtcdConfiguration(
                endpoints: ["http://127.0.0.1:\(server.port)"], requestTimeout: .seconds(5), connectTimeout: .seconds(2)
            )
        )
        await #expect(throws: FleetError.self) { _ = try await store.list(prefix: "/conntrackr/blocks/") }
        try await store.shutdown()
        #expect(!elsewhere.hasPendingConnection)
    }
}

extension [UInt8] {
    fileprivate var containsHeadEnd: Bool {
        count >= 4 && (0...(count - 4)).contains { self[$0..<$0 + 4].elementsEqual([13, 10, 13, 10]) }
    }
}
