import ConnBlock
import ConnCore

/// Properties of ``AllowFile/parse(_:path:)``, against a plain reading of its documented format done on bytes:
/// lines end at `\n` (a trailing `\r` dropped), a `#` starts a comment, spaces and tabs separate words, a line with
/// no word is skipped, and any other line must be exactly one address or CIDR in the notation.
///
/// - A file the reading rejects is rejected, at the same line (nothing invalid is ever accepted).
/// - A file that parses gives exactly the prefixes of the reading, in order (nothing is silently changed).
/// - A rejection the reading does not make must be at a line with non-ASCII bytes, where Swift's grapheme
///   clusters may glue a combining mark onto `#`, a space or a tab: refusing is the safe side of that difference.
/// - The error is one printable line naming the file and the line number.
public enum AllowFileProperties: Sendable {
    static let path = "allow.txt"

    /// The violations an allow file's contents cause.
    public static func violations(_ contents: [UInt8]) -> [String] {
        var found: [String] = []
        func fail(_ what: String) { found.append("\(what) [file \(hex(contents))]") }
        let expected = reading(contents)
        do {
            let prefixes = try AllowFile.parse(contents, path: path)
            switch expected {
            case .success(let wanted) where wanted != prefixes:
                fail("parsed \(prefixes), the format says \(wanted)")
            case .failure(let line):
                fail("accepted a file whose line \(line) is not an address or CIDR: \(prefixes)")
            default:
                break
            }
        } catch {
            let message = error.message
            if error.code != .invalidConfiguration { fail("error code \(error.code), not invalidConfiguration") }
            if message.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                fail("error message is not one printable line: \(message.debugDescription)")
            }
            let number =
                message.hasPrefix("\(path):")
                ? Int(message.dropFirst(path.count + 1).prefix { $0.isNumber }) : nil
            guard let number else {
                fail("error does not name the file and line: \(message.debugDescription)")
                return found
            }
            switch expected {
            case .failure(let line) where line != number:
                fail("rejected at line \(number), the format says line \(line)")
            case .success:
                let lines = contents.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                if number < 1 || number > lines.count || lines[number - 1].allSatisfy({ $0 < 0x80 }) {
                    fail("rejected a valid file at line \(number): \(message.debugDescription)")
                }
            default:
                break
            }
        }
        return found
    }

    /// The prefixes of a file, or the number of its first bad line.
    enum Reading: Equatable {
        case success([IPPrefix])
        case failure(Int)
    }

    static func reading(_ contents: [UInt8]) -> Reading {
        var prefixes: [IPPrefix] = []
        let lines = contents.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (index, rawLine) in lines.enumerated() {
            var line = rawLine
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            let content = line.prefix { $0 != UInt8(ascii: "#") }
            let words = content.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            if words.isEmpty { continue }
            guard words.count == 1, words[0].allSatisfy(AddressTextProperties.isNotationByte),
                let prefix = IPPrefix(String(decoding: words[0], as: UTF8.self))
            else { return .failure(index + 1) }
            prefixes.append(prefix)
        }
        return .success(prefixes)
    }
}
