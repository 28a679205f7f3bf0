#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A blocking TCP client on plain sockets, so tests can send exactly the bytes they want (oversized heads,
/// unknown methods, nothing at all) to a server on 127.0.0.1.
///
/// Every read times out, after 30 s by default: a bound so a broken server fails the test instead of hanging it,
/// set far above any answer's time because the clock runs on while the test process waits for the CPU: in one unit
/// test run on the two-vCPU CI machine every test stalled for 22 s, and a read with a 5 s timeout failed.
final class TestConnection {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A response as read off the wire.
    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: String

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    private let descriptor: Int32
    private var received: [UInt8] = []

    /// Connects to 127.0.0.1:`port` from `source`, an address of 127.0.0.0/8 (a client of its own).
    init(port: Int, timeout: Duration = .seconds(30), source: String = "127.0.0.1") throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        try Self.call(descriptor, bind, address: source, port: 0, what: "bind to \(source)")
        let seconds = timeout.components.seconds
        var interval = timeval(tv_sec: Int(seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        try Self.call(descriptor, connect, address: "127.0.0.1", port: port, what: "connect to 127.0.0.1:\(port)")
    }

    /// Calls `bind` or `connect` on `descriptor` with an IPv4 address; closes it and throws when that fails.
    private static func call(
        _ descriptor: Int32,
        _ function: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32,
        address text: String,
        port: Int,
        what: String
    ) throws {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(text)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                function(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            close(descriptor)
            throw Failure(description: "\(what): errno \(code)")
        }
    }

    private var isOpen = true

    deinit { disconnect() }

    /// Closes this side of the connection.
    func disconnect() {
        guard isOpen else { return }
        isOpen = false
        close(descriptor)
    }

    /// Sends `text` as it is. A peer that already closed may make this fail; that is ignored, reads tell.
    func write(_ text: String) {
        write(Array(text.utf8))
    }

    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard sent > 0 else { return }
            offset += sent
        }
    }

    /// Reads one response (its body by Content-Length).
    func readResponse() throws -> Response {
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = find([13, 10, 13, 10])
            if headerEnd == nil { guard try fill() else { throw Failure(description: "closed before a response") } }
        }
        let head = String(decoding: received[..<headerEnd!], as: UTF8.self)
        received.removeFirst(headerEnd! + 4)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
            throw Failure(description: "bad status line in \(head)")
        }
        let headers = lines.map { line -> (String, String) in
            let parts = line.split(separator: ":", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]).trimmingSpaces() : "")
        }
        var response = Response(status: status, headers: headers, body: "")
        let length = Int(response.header("content-length") ?? "0") ?? 0
        while received.count < length {
            guard try fill() else { throw Failure(description: "closed in the middle of a body") }
        }
        response.body = String(decoding: received[..<length], as: UTF8.self)
        received.removeFirst(length)
        return response
    }

    /// Sends a request and reads its response.
    func request(_ method: String = "GET", _ path: String, headers: [String] = []) throws -> Response {
        write(([("\(method) \(path) HTTP/1.1"), "Host: 127.0.0.1"] + headers).joined(separator: "\r\n") + "\r\n\r\n")
        return try readResponse()
    }

    /// Whether the server closes the connection (end of file or reset) before the read timeout; bytes that arrive
    /// first are kept.
    func isClosedByPeer() -> Bool {
        while true {
            do {
                guard try fill() else { return true }
            } catch {
                return false
            }
        }
    }

    /// Reads more bytes; `false` at end of file or on reset.
    private func fill() throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        if count > 0 {
            received.append(contentsOf: buffer[..<count])
            return true
        }
        if count == 0 || errno == ECONNRESET { return false }
        throw Failure(description: "read timed out or failed: errno \(errno)")
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard received.count >= pattern.count else { return nil }
        for start in 0...(received.count - pattern.count)
        where received[start..<(start + pattern.count)].elementsEqual(pattern) {
            return start
        }
        return nil
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
