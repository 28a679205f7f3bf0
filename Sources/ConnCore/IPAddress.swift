#if canImport(Glibc)
public import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address, stored as 128 bits in network order.
///
/// IPv4 addresses are kept in their IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), so one type, one hash and one
/// comparison serve both families with no allocation.
/// - Important: an IPv6 address that is itself IPv4-mapped is indistinguishable from IPv4. Such addresses are not
///   valid on the wire (RFC 4291 §2.5.5.2): ``FrameParser`` and the XDP program judge an IPv6 packet from one
///   malformed (``MalformedReason/ipv4MappedSource``) rather than report the IPv4 host it maps.
public struct IPAddress: Hashable, Sendable, Comparable, BitwiseCopyable {
    /// The first 64 bits of the address, most significant byte first.
    public var high: UInt64
    /// The last 64 bits of the address, most significant byte first.
    public var low: UInt64

    private static let ipv4MappedMarker: UInt64 = 0x0000_FFFF_0000_0000

    /// An IPv6 address from its two 64-bit halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// An IPv4 address from its 32-bit value (`a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`).
    public init(ipv4 value: UInt32) {
        self.high = 0
        self.low = Self.ipv4MappedMarker | UInt64(value)
    }

    /// An address from 4 (IPv4) or 16 (IPv6) bytes in network order; `nil` for any other length.
    public init?(bytes: some Collection<UInt8>) {
        let array = Array(bytes)
        switch array.count {
        case 4:
            self.init(ipv4: array.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        case 16:
            let high = array[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = array[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            self.init(high: high, low: low)
        default:
            return nil
        }
    }

    /// Parses dotted IPv4 or RFC 4291 IPv6 text; `nil` when the text is neither.
    public init?(_ text: String) {
        // inet_pton reads a C string: text after a NUL would be silently ignored ("1.2.3.4\0junk").
        guard !text.utf8.contains(0) else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(ipv4: UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        self.init(bytes: bytes)
    }

    /// Whether this is an IPv4 address.
    public var isIPv4: Bool { high == 0 && (low & 0xFFFF_FFFF_0000_0000) == Self.ipv4MappedMarker }

    /// The 32-bit value of an IPv4 address, `nil` for IPv6.
    public var ipv4Value: UInt32? { isIPv4 ? UInt32(truncatingIfNeeded: low) : nil }

    /// The number of bits in an address of this family: 32 or 128.
    public var bitWidth: Int { isIPv4 ? 32 : 128 }

    /// The address bytes in network order: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        if let v4 = ipv4Value {
            return [UInt8(v4 >> 24), UInt8(v4 >> 16 & 0xFF), UInt8(v4 >> 8 & 0xFF), UInt8(v4 & 0xFF)]
        }
        return (0..<16).map { index in
            let word = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: word >> (56 - 8 * UInt64(index % 8)))
        }
    }

    /// The 16-byte IPv6 (or IPv4-mapped) form, as the kernel's maps and events carry it.
    public var ipv6MappedBytes: [UInt8] {
        (0..<16).map { index in
            let word = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: word >> (56 - 8 * UInt64(index % 8)))
        }
    }

    /// Whether this is a loopback address (127.0.0.0/8 or ::1).
    public var isLoopback: Bool {
        if let v4 = ipv4Value { return v4 >> 24 == 127 }
        return high == 0 && low == 1
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}

extension IPAddress: CustomStringConvertible {
    /// Dotted quad for IPv4, RFC 5952 canonical text for IPv6.
    public var description: String {
        var text = LineBuffer(capacity: 64)
        appendText(to: &text)
        return text.text
    }

    /// Appends the textual form to a line without allocating.
    @inline(__always)
    func appendText(to buffer: inout LineBuffer) {
        guard isIPv4 else {
            appendIPv6Text(to: &buffer)
            return
        }
        buffer.appendIPv4(UInt32(truncatingIfNeeded: low))
    }

    /// The 16-bit group `index` (0 to 7) of the address.
    private func group(_ index: Int) -> UInt16 {
        UInt16(truncatingIfNeeded: (index < 4 ? high : low) >> UInt64(48 - 16 * (index % 4)))
    }

    private func appendIPv6Text(to buffer: inout LineBuffer) {
        // RFC 5952: compress the longest run of two or more zero groups, the first one on a tie.
        var bestStart = -1, bestLength = 0, runStart = -1
        for index in 0...8 {
            if index < 8 && group(index) == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                let length = index - runStart
                if length > bestLength && length >= 2 { bestStart = runStart; bestLength = length }
                runStart = -1
            }
        }
        var index = 0
        while index < 8 {
            if index == bestStart {
                buffer.append(UInt8(ascii: ":"))
                if index == 0 { buffer.append(UInt8(ascii: ":")) }
                index += bestLength
                continue
            }
            buffer.appendHex(group(index))
            if index < 7 { buffer.append(UInt8(ascii: ":")) }
            index += 1
        }
    }
}

/// An address prefix in CIDR form, such as `198.51.100.0/24` or `2001:db8::/64`.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    /// The first address of the prefix; bits past ``length`` are zero.
    public let address: IPAddress
    /// The prefix length in the address family's bits: 0...32 for IPv4, 0...128 for IPv6.
    public let length: Int

    /// A prefix of `length` bits starting at `address`, host bits cleared; `nil` if the length does not fit the family.
    public init?(address: IPAddress, length: Int) {
        guard length >= 0, length <= address.bitWidth else { return nil }
        self.address = Self.masked(address, to: length)
        self.length = length
    }

    /// The single-address prefix (`/32` or `/128`) of `address`.
    public init(host address: IPAddress) {
        self.address = address
        self.length = address.bitWidth
    }

    /// Parses `ADDRESS/LENGTH`, or a bare address as a host prefix; `nil` for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        guard parts.count == 2 else {
            self.init(host: address)
            return
        }
        // Decimal digits only: `Int` would also take a sign, and "/-0" would mean /0, everything.
        let digits = parts[1].utf8
        guard (1...3).contains(digits.count), digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let length = Int(parts[1])
        else { return nil }
        self.init(address: address, length: length)
    }

    /// The length counted over 128 bits, as an IPv4-mapped prefix (IPv4 /24 is /120).
    public var mappedLength: Int { address.isIPv4 ? length + 96 : length }

    /// Whether `candidate` lies inside this prefix (an IPv4 prefix never contains an IPv6 address).
    public func contains(_ candidate: IPAddress) -> Bool {
        guard candidate.isIPv4 == address.isIPv4 else { return false }
        return Self.masked(candidate, to: length) == address
    }

    public var description: String { "\(address)/\(length)" }

    /// The text users read: a host prefix shows as its bare address.
    public var compactDescription: String { length == address.bitWidth ? address.description : description }

    private static func masked(_ address: IPAddress, to length: Int) -> IPAddress {
        let bits = address.isIPv4 ? length + 96 : length
        func mask(_ bitsInWord: Int) -> UInt64 {
            if bitsInWord <= 0 { return 0 }
            if bitsInWord >= 64 { return .max }
            return ~(UInt64.max >> UInt64(bitsInWord))
        }
        return IPAddress(high: address.high & mask(bits), low: address.low & mask(bits - 64))
    }
}

extension IPAddress {
    /// The address of an `AF_INET` or `AF_INET6` socket address (from `getifaddrs`, `getaddrinfo`); `nil` for
    /// other families.
    public init?(socketAddress: UnsafePointer<sockaddr>) {
        switch Int32(socketAddress.pointee.sa_family) {
        case AF_INET:
            let value = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            self.init(ipv4: UInt32(bigEndian: value))
        case AF_INET6:
            let bytes = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
            }
            self.init(bytes: bytes)
        default:
            return nil
        }
    }
}
