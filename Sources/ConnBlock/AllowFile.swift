public import ConnCore

/// The `--allow-file` format: one address or CIDR per line.
///
/// ```
/// # office and monitoring
/// 198.51.100.0/24
/// 2001:db8:42::/48   # trailing comments are fine
/// 203.0.113.9
/// ```
/// Blank lines and everything after `#` are ignored; leading and trailing spaces, tabs and CRLF endings are
/// tolerated. A CIDR with host bits set (`198.51.100.7/24`) means its network. Anything else on a line is an
/// error naming the file, the line and what kind of problem it has, so a typo never silently leaves a host
/// unprotected. The error never quotes the line: the file is read as root, and its text is not for the log.
public enum AllowFile: Sendable {
    /// Parses the contents of an allow file; `path` is used only in error messages.
    /// - Throws: ``ConntrackrError`` with code `invalidConfiguration` for the first bad line.
    public static func parse(_ contents: [UInt8], path: String) throws(ConntrackrError) -> [IPPrefix] {
        var prefixes: [IPPrefix] = []
        for (number, line) in TextFile.lines(contents) {
            // Bytes, not Characters: a "#", space or tab followed by a combining mark is one Character that is
            // none of them, and would turn a comment into an error (found by the allowlist fuzzer).
            let bytes = Array(line.utf8)
            let content = bytes.prefix { $0 != UInt8(ascii: "#") }
            let words = content.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
            if words.isEmpty { continue }
            guard words.count == 1 else {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "\(path):\(number): expected one address or CIDR, found \(words.count) words"
                )
            }
            let word = Substring(String(decoding: words[0], as: UTF8.self))
            guard let prefix = parsePrefix(word) else {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "\(path):\(number): expected one address or CIDR, found \(problem(of: word))"
                )
            }
            prefixes.append(prefix)
        }
        return prefixes
    }

    /// Reads and parses the allow file at `path`.
    /// - Throws: ``ConntrackrError`` (`invalidConfiguration`) when the file cannot be read or has a bad line.
    public static func load(path: String) throws(ConntrackrError) -> [IPPrefix] {
        let contents: [UInt8]
        do {
            contents = try TextFile.contents(of: path)
        } catch {
            throw ConntrackrError(.invalidConfiguration, "cannot read allow file \(path): \(error.text)")
        }
        return try parse(contents, path: path)
    }

    /// An address or CIDR, refusing characters that `inet_pton` would never accept anyway, so that a NUL or a
    /// zone index (`fe80::1%eth0`) cannot be half-parsed.
    static func parsePrefix(_ word: Substring) -> IPPrefix? {
        guard word.utf8.allSatisfy(isAddressByte), word.utf8.count <= maxWordBytes else { return nil }
        return IPPrefix(String(word))
    }

    /// What is wrong with a word that is not an address or CIDR, described without quoting it.
    static func problem(of word: Substring) -> String {
        if !word.utf8.allSatisfy(isAddressByte) { return "characters that cannot be in an address or CIDR" }
        if word.utf8.count > maxWordBytes { return "a word of \(word.utf8.count) characters, too long for an address" }
        if word.contains("/") { return "a CIDR whose address or prefix length is not valid" }
        return "a word that is not a valid address"
    }

    private static let maxWordBytes = 64

    private static func isAddressByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
            UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "/"):
            true
        default:
            false
        }
    }
}
