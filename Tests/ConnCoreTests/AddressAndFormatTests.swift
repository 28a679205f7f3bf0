import ConnCore
import Testing

@Suite("Addresses and prefixes")
struct AddressTests {
    @Test("Text round-trips in canonical form", arguments: [
        ("198.51.100.56", "198.51.100.56"), ("0.0.0.0", "0.0.0.0"), ("255.255.255.255", "255.255.255.255"),
        ("2001:db8::1", "2001:db8::1"), ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"), ("::", "::"),
        ("::1", "::1"), ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"), ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("fe80::", "fe80::"),
    ])
    func roundTrip(input: String, canonical: String) {
        #expect(IPAddress(input)?.description == canonical)
    }

    @Test("Junk is not an address")
    func junk() {
        for text in ["", "1.2.3", "256.1.1.1", "2001:db8:::1", "abc", "1.2.3.4/8"] { #expect(IPAddress(text) == nil) }
    }

    @Test("Prefixes mask host bits and test membership per family")
    func prefixes() throws {
        let v4 = try #require(IPPrefix("198.51.100.77/24"))
        #expect(v4.description == "198.51.100.0/24")
        #expect(v4.contains(IPAddress("198.51.100.200")!))
        #expect(!v4.contains(IPAddress("198.51.101.1")!))
        let v6 = try #require(IPPrefix("2001:db8:1:2:3::/64"))
        #expect(v6.description == "2001:db8:1:2::/64")
        #expect(v6.contains(IPAddress("2001:db8:1:2:ffff::1")!))
        #expect(!v6.contains(IPAddress("198.51.100.1")!))
        #expect(IPPrefix("198.51.100.1/33") == nil)
        #expect(IPPrefix("198.51.100.1/x") == nil)
        #expect(IPPrefix("203.0.113.9")?.compactDescription == "203.0.113.9")
        #expect(IPPrefix("0.0.0.0/0")!.contains(IPAddress("203.0.113.9")!))
    }
}

// Serialized: two tests set TZ, which is one per process, and Swift Testing runs tests in parallel (it raced).
@Suite("Event lines", .serialized)
struct EventFormatTests {
    // 2021-04-28 15:28:05 UTC
    static let time = Timestamp(seconds: 1_619_623_685)
    static let attempt = ConnectionAttempt(
        time: time, source: IPAddress("198.51.100.56")!, sourcePort: 5973,
        destination: IPAddress("203.0.113.5")!, destinationPort: 80
    )

    @Test("Text lines match the documented format, in the local time zone")
    func text() {
        setenv("TZ", "UTC", 1)
        var formatter = EventFormatter(format: .text)
        #expect(formatter.line(for: .newConnection(Self.attempt)) == "2021-04-28 15:28:05: New connection: 198.51.100.56:5973 -> 203.0.113.5:80")
        let scan = PortScan(time: Self.time + .seconds(6), source: Self.attempt.source, destination: Self.attempt.destination, ports: [80, 81, 82, 83])
        #expect(formatter.line(for: .portScan(scan)) == "2021-04-28 15:28:11: Port scan detected: 198.51.100.56 -> 203.0.113.5 on ports 80,81,82,83")
        let v6 = ConnectionAttempt(time: Self.time, source: IPAddress("2001:db8::1")!, sourcePort: 1, destination: IPAddress("2001:db8::2")!, destinationPort: 443)
        #expect(formatter.line(for: .newConnection(v6)) == "2021-04-28 15:28:05: New connection: [2001:db8::1]:1 -> [2001:db8::2]:443")
        let entry = BlockEntry(prefix: IPPrefix(host: Self.attempt.source), reason: .portScan, since: scan.time, expires: scan.time + .seconds(3600))
        #expect(formatter.line(for: .blocked(entry, at: scan.time)) == "2021-04-28 15:28:11: Blocked: 198.51.100.56 (port scan, until 2021-04-28 16:28:11)")
    }

    @Test("TZ is respected")
    func timeZone() {
        setenv("TZ", "Asia/Tokyo", 1)
        defer { setenv("TZ", "UTC", 1) }
        var formatter = EventFormatter(format: .text)
        #expect(formatter.line(for: .newConnection(Self.attempt)).hasPrefix("2021-04-29 00:28:05: "))
    }

    @Test("JSON lines carry the documented fields in UTC with microseconds")
    func json() {
        var formatter = EventFormatter(format: .json)
        var attempt = Self.attempt
        attempt.time = Self.time + .microseconds(42)
        #expect(formatter.line(for: .newConnection(attempt)) == #"{"time":"2021-04-28T15:28:05.000042Z","event":"new_connection","src":"198.51.100.56","src_port":5973,"dst":"203.0.113.5","dst_port":80}"#)
        let scan = PortScan(time: Self.time + .seconds(6), source: Self.attempt.source, destination: Self.attempt.destination, ports: [80, 81, 82, 83])
        #expect(formatter.line(for: .portScan(scan)) == #"{"time":"2021-04-28T15:28:11.000000Z","event":"port_scan","src":"198.51.100.56","dst":"203.0.113.5","ports":[80,81,82,83]}"#)
        let entry = BlockEntry(prefix: IPPrefix(host: Self.attempt.source), reason: .portScan, since: scan.time, expires: scan.time + .seconds(3600))
        #expect(formatter.line(for: .blocked(entry, at: scan.time)) == #"{"time":"2021-04-28T15:28:11.000000Z","event":"blocked","src":"198.51.100.56/32","reason":"port_scan","origin":"local","expires":"2021-04-28T16:28:11.000000Z"}"#)
        #expect(formatter.line(for: .notBlocked(Self.attempt.source, reason: .failed("say \"hi\"\n"), at: Self.time)).hasSuffix(#""reason":"error: say \"hi\"\u000a"}"#))
    }
}

#if canImport(Glibc)
import Glibc
#endif
