public import ConnCore

/// Where the metrics endpoint listens: a host and a port.
public struct MetricsEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 or IPv6 address (without brackets), or a host name.
    public var host: String
    /// The TCP port; 0 asks the kernel for a free one.
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// The endpoint as `HOST:PORT`, with IPv6 addresses in brackets (`[::1]:9542`).
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The value of `--metrics-address`: `HOST:PORT`, `[IPV6]:PORT`, or `none` to turn the endpoint off.
public enum MetricsAddress: Hashable, Sendable, CustomStringConvertible {
    /// No metrics endpoint.
    case disabled
    case endpoint(MetricsEndpoint)

    /// `127.0.0.1:9542`: loopback only, so that nothing outside the host reads the metrics unless asked to.
    public static let `default` = MetricsAddress.endpoint(MetricsEndpoint(host: "127.0.0.1", port: 9542))

    /// Parses `HOST:PORT`, `[IPV6]:PORT` or `none`.
    ///
    /// The host is an IPv4 address, a bracketed IPv6 (or IPv4) address or a host name; an IPv6 address without
    /// brackets is refused because its last group could not be told from the port.
    /// - Throws: ``ConnCore/ConntrackrError`` with code `invalidConfiguration` and a message saying what to write.
    public init(parsing text: String) throws(ConntrackrError) {
        let text = text.trimmingWhitespace()
        if text.lowercased() == "none" {
            self = .disabled
            return
        }
        func invalid(_ why: String) -> ConntrackrError {
            ConntrackrError(
                .invalidConfiguration,
                // Quoted as Swift would, so that control characters cannot break the message over lines.
                "invalid metrics address \(text.debugDescription): \(why) (expected HOST:PORT, [IPV6]:PORT or none)"
            )
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw invalid("missing ']'") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw invalid("missing ':PORT' after ']'") }
            portText = rest.dropFirst()
            // IPv4 in brackets too, so that one template (`[$(NODE_IP)]:9542`) serves nodes of either family.
            guard IPAddress(String(host)) != nil else {
                throw invalid("\(String(host).debugDescription) is not an IP address")
            }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw invalid("missing ':PORT'") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw invalid("write an IPv6 address in brackets, as [::1]:9542") }
            guard !host.isEmpty else { throw invalid("missing host; use 0.0.0.0 or [::] for every address") }
            guard host.utf8.allSatisfy(Self.isHostNameByte) else {
                throw invalid("\(String(host).debugDescription) is not a host name")
            }
        }
        guard portText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let port = Int(portText), port <= 65535
        else { throw invalid("\(String(portText).debugDescription) is not a port number (0-65535)") }
        self = .endpoint(MetricsEndpoint(host: String(host), port: port))
    }

    /// `none`, or the endpoint as ``MetricsEndpoint/description`` writes it.
    public var description: String {
        switch self {
        case .disabled: "none"
        case .endpoint(let endpoint): endpoint.description
        }
    }

    private static func isHostNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default:
            false
        }
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
