#if canImport(Glibc)
import Glibc
#endif

/// A file under the system's temporary directory, removed when the value is released.
public final class TemporaryFile: Sendable {
    public let path: String

    /// Writes `bytes` to a new temporary file whose name ends in `suffix`.
    public init(_ bytes: [UInt8], suffix: String = ".pcap") {
        var template = Array("/tmp/conntrackr-test-XXXXXX\(suffix)".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemps($0.baseAddress!, Int32(suffix.utf8.count)) }
        precondition(descriptor >= 0, "cannot create a temporary file")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            precondition(written > 0, "cannot write a temporary file")
            offset += written
        }
        close(descriptor)
    }

    deinit { unlink(path) }
}
