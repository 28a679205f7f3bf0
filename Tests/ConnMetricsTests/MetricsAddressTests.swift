import ConnCore
import ConnMetrics
import Testing

@Suite("--metrics-address")
struct MetricsAddressTests {
    static let valid: [(String, MetricsAddress)] = [
        ("127.0.0.1:9542", .endpoint(.init(host: "127.0.0.1", port: 9542))),
        ("0.0.0.0:80", .endpoint(.init(host: "0.0.0.0", port: 80))),
        ("[::1]:9542", .endpoint(.init(host: "::1", port: 9542))),
        ("[2001:db8::5]:65535", .endpoint(.init(host: "2001:db8::5", port: 65535))),
        ("[::]:0", .endpoint(.init(host: "::", port: 0))),
        // The DaemonSet's `[$(NODE_IP)]:9542` on an IPv4 node.
        ("[127.0.0.1]:9542", .endpoint(.init(host: "127.0.0.1", port: 9542))),
        ("localhost:9100", .endpoint(.init(host: "localhost", port: 9100))),
        ("metrics-1.example.org:9542", .endpoint(.init(host: "metrics-1.example.org", port: 9542))),
        (" 127.0.0.1:9542\n", .endpoint(.init(host: "127.0.0.1", port: 9542))),
        ("none", .disabled),
        ("NONE", .disabled),
    ]

    @Test(arguments: valid)
    func parses(text: String, expected: MetricsAddress) throws {
        #expect(try MetricsAddress(parsing: text) == expected)
    }

    static let invalid: [(String, String)] = [
        ("", "missing ':PORT'"),
        ("127.0.0.1", "missing ':PORT'"),
        ("127.0.0.1:", "not a port number"),
        (":9542", "missing host"),
        ("127.0.0.1:65536", "not a port number"),
        ("127.0.0.1:-1", "not a port number"),
        ("127.0.0.1:+80", "not a port number"),
        ("127.0.0.1:99999999999999999999999", "not a port number"),
        ("127.0.0.1:http", "not a port number"),
        ("::1:9542", "in brackets"),
        ("[::1]", "missing ':PORT' after ']'"),
        ("[::1:9542", "missing ']'"),
        ("[fe80::zz]:9542", "not an IP address"),
        ("[localhost]:9542", "not an IP address"),
        ("host name:80", "not a host name"),
        ("h/st:80", "not a host name"),
        ("a\nb:80", "not a host name"),
    ]

    @Test(arguments: invalid)
    func refusesWithAOneLineReason(text: String, reason: String) {
        let error = #expect(throws: ConntrackrError.self) { try MetricsAddress(parsing: text) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("expected HOST:PORT, [IPV6]:PORT or none") == true)
        #expect(error?.message.contains("\n") == false)
    }

    @Test func descriptionRoundTrips() throws {
        for (text, _) in Self.valid {
            let address = try MetricsAddress(parsing: text)
            #expect(try MetricsAddress(parsing: address.description) == address)
        }
        #expect(MetricsAddress.default.description == "127.0.0.1:9542")
        #expect(MetricsEndpoint(host: "::1", port: 1).description == "[::1]:1")
    }
}
