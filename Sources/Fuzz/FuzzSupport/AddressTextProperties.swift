import ConnCore

/// Properties of the address and prefix parsers that allow files, flags and the blocklist command rely on,
/// checked line by line by the `FuzzAllowlist` target:
///
/// - whatever parses prints in a form that parses back to the same value;
/// - text that parses holds only the characters of the notation (digits, hex letters, `.`, `:`, `/`), so nothing
///   is half-parsed, such as text cut at a NUL, a sign before a prefix length, or a zone index;
/// - dotted IPv4 text parses exactly when a plain reading of the notation (four decimal parts of at most 255,
///   no leading zeros) accepts it, to the same value;
/// - a prefix has its host bits clear, a length within its family, contains its own address and, by the bits,
///   the address with its last bit flipped exactly when it is shorter than a host prefix.
public enum AddressTextProperties: Sendable {
    /// The violations one line of text causes.
    public static func violations(line: String) -> [String] {
        var found: [String] = []
        func fail(_ what: String) { found.append("\(what) [text \(hex(line.utf8))]") }
        let notation = line.utf8.allSatisfy(isNotationByte)

        let address = IPAddress(line)
        if let address {
            if IPAddress(address.description) != address { fail("\(address) does not parse back") }
            if IPAddress(bytes: address.bytes) != address { fail("\(address) does not rebuild from its bytes") }
            if !notation || line.contains("/") { fail("address text with foreign characters parsed as \(address)") }
        }
        if !line.contains(":") {
            let expected = dottedQuad(line)
            if address != expected {
                fail("dotted text parsed as \(String(describing: address)), expected \(String(describing: expected))")
            }
        }

        guard let prefix = IPPrefix(line) else { return found }
        if !notation { fail("prefix text with foreign characters parsed as \(prefix)") }
        if IPPrefix(prefix.description) != prefix { fail("\(prefix) does not parse back") }
        if IPPrefix(prefix.compactDescription) != prefix { fail("\(prefix.compactDescription) does not parse back") }
        if prefix.length < 0 || prefix.length > prefix.address.bitWidth { fail("\(prefix) has an impossible length") }
        if IPPrefix(address: prefix.address, length: prefix.length) != prefix { fail("\(prefix) has host bits set") }
        if !prefix.contains(prefix.address) { fail("\(prefix) does not contain its own address") }
        if !line.contains("/"), let address, prefix != IPPrefix(host: address) {
            fail("bare address \(address) parsed as prefix \(prefix)")
        }
        if let slash = line.firstIndex(of: "/"), let written = IPAddress(String(line[..<slash])) {
            if !prefix.contains(written) { fail("\(prefix) does not contain the written address \(written)") }
        }
        // Flip the last bit of the prefix's address: inside exactly when the prefix is shorter than a host prefix.
        let flipped = IPAddress(high: prefix.address.high, low: prefix.address.low ^ 1)
        if prefix.contains(flipped) != (prefix.length < prefix.address.bitWidth) {
            fail("\(prefix) contains \(flipped): \(prefix.contains(flipped))")
        }
        let allowlist = Allowlist([Allowlist.Entry(prefix: prefix, reason: .configured)])
        if allowlist.reason(for: prefix.address) == nil { fail("an allowlist of \(prefix) does not allow its address") }
        if allowlist.overlaps(prefix) == nil { fail("an allowlist of \(prefix) does not overlap it") }
        return found
    }

    static func isNotationByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
            UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "/"):
            true
        default:
            false
        }
    }

    /// A plain reading of dotted-quad IPv4 text, as `inet_pton` defines it.
    static func dottedQuad(_ text: String) -> IPAddress? {
        let parts = text.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ (48...57).contains($0) }) else { return nil }
            guard part.count == 1 || part.first != UInt8(ascii: "0") else { return nil }
            let number = part.reduce(0) { $0 * 10 + Int($1 - 48) }
            guard number <= 255 else { return nil }
            value = value << 8 | UInt32(number)
        }
        return IPAddress(ipv4: value)
    }
}
