#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading small text files (allowlists, /proc tables) with errors a user can act on.
public enum TextFile: Sendable {
    /// Why a read failed: the errno, so callers can treat a missing file differently from an unreadable one.
    public struct ReadError: Error {
        public var path: String
        public var errno: Int32

        /// The system's description of ``errno``.
        public var text: String { String(cString: strerror(errno)) }
    }

    /// The bytes of `path`, at most `limit` of them (a larger file is an `EFBIG` error rather than a memory spike).
    public static func contents(of path: String, limit: Int = 16 << 20) throws(ReadError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ReadError(path: path, errno: errno) }
        defer { close(fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            // /proc files report size 0, so read until end of file instead of trusting fstat.
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ReadError(path: path, errno: errno)
            }
            if count == 0 { return contents }
            guard contents.count + count <= limit else { throw ReadError(path: path, errno: EFBIG) }
            contents.append(contentsOf: chunk[0..<count])
        }
    }

    /// Splits bytes into lines on `\n`, dropping a trailing `\r`, numbered from 1. (Splitting a `String` on
    /// `"\n"` would miss CRLF endings, which Swift treats as one character.)
    public static func lines(_ bytes: [UInt8]) -> [(number: Int, text: String)] {
        bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated().map { index, line in
            let trimmed = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
            return (index + 1, String(decoding: trimmed, as: UTF8.self))
        }
    }
}
