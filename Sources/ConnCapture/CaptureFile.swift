import CGzip
import CPcap
import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// One capture file open for reading: pcap or pcapng, plain or gzip-compressed (told by its first two bytes, the
/// gzip magic `1f 8b`, not by its name), through libpcap. The one home of opening a capture file.
///
/// Used by one thread at a time (the replay's capture thread).
final class CaptureFile {
    let path: String
    let handle: PcapHandle
    let linkType: LinkType
    /// The stream libpcap reads; valid until `handle` is closed.
    private let stream: UnsafeMutablePointer<FILE>
    /// The inflating layer of a gzip file, `nil` for a plain one.
    private let gzip: OpaquePointer?
    /// The current record, after ``advance()`` returned `true`.
    private(set) var time = Timestamp(nanoseconds: 0)
    private var header: UnsafeMutablePointer<pcap_pkthdr>?
    private var data: UnsafePointer<UInt8>?

    /// The stdio buffer libpcap reads a plain capture through. libpcap reads each record with two `fread`s; with
    /// stdio's default buffer (one file-system block, 4 KiB) that is a read(2) for every 4 KiB of capture.
    /// A 1 MiB buffer cuts the system calls 256-fold.
    static let readBufferBytes = 1 << 20
    /// zlib's input buffer and the inflated stream's stdio buffer of a gzip capture.
    static let gzipBufferBytes = 1 << 18

    /// Opens `path` (`-` is standard input, as with `tcpdump -r -`).
    /// - Throws: ``ConntrackrError`` `unreadableCapture` (missing, not a capture, bad gzip) or
    ///   `unsupportedLinkType`, naming the file.
    init(path: String) throws(ConntrackrError) {
        self.path = path
        // A duplicate of standard input, since libpcap closes the file it reads.
        let descriptor = path == "-" ? dup(STDIN_FILENO) : Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(String(cString: strerror(errno)))")
        }
        var gzipHandle: OpaquePointer?
        var readBuffer: UnsafeMutableRawPointer?
        let opened: UnsafeMutablePointer<FILE>?
        switch Self.peekCompression(descriptor) {
        case .gzip, .unknown:
            // Unknown (a pipe cannot be peeked at): zlib tells gzip from plain data by the same magic and copies
            // plain data through.
            opened = ct_gzip_fdopen(descriptor, UInt32(Self.gzipBufferBytes), &gzipHandle)
            if let opened {
                readBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.gzipBufferBytes, alignment: 64)
                setvbuf(opened, readBuffer?.assumingMemoryBound(to: CChar.self), _IOFBF, Self.gzipBufferBytes)
            }
        case .plain:
            opened = fdopen(descriptor, "rb")
            if let opened {
                // glibc ignores the size unless it is given the buffer too.
                readBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.readBufferBytes, alignment: 64)
                setvbuf(opened, readBuffer?.assumingMemoryBound(to: CChar.self), _IOFBF, Self.readBufferBytes)
            } else {
                let saved = errno
                close(descriptor)
                errno = saved
            }
        }
        guard let opened else {
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(String(cString: strerror(errno)))")
        }
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let raw = pcap_fopen_offline_with_tstamp_precision(opened, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer)
        else {
            fclose(opened)  // libpcap takes the file only when it succeeds
            readBuffer?.deallocate()
            let gzipError = gzipHandle.flatMap { ct_gzip_error($0) }.map { String(cString: $0) }
            if let gzipHandle { ct_gzip_free(gzipHandle) }
            let reason = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // libpcap names the file itself in some messages.
            let detail = reason.hasPrefix(path) ? String(reason.dropFirst(path.count).drop { $0 == ":" || $0 == " " }) : reason
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(gzipError ?? detail)")
        }
        let buffer = readBuffer
        let ownedGzip = gzipHandle
        handle = PcapHandle(raw) {
            buffer?.deallocate()
            if let ownedGzip { ct_gzip_free(ownedGzip) }
        }
        stream = opened
        gzip = gzipHandle
        do {
            linkType = try handle.linkType(describing: path)
        } catch let error as ConntrackrError {
            throw error
        } catch {
            throw ConntrackrError(.unsupportedLinkType, "\(path): \(error)")
        }
    }

    private enum Compression { case plain, gzip, unknown }

    /// What the file's first two bytes say, read without moving its offset; `unknown` when it cannot be peeked at.
    private static func peekCompression(_ descriptor: Int32) -> Compression {
        let offset = lseek(descriptor, 0, SEEK_CUR)
        guard offset >= 0 else { return .unknown }
        var magic: (UInt8, UInt8) = (0, 0)
        let got = withUnsafeMutableBytes(of: &magic) { pread(descriptor, $0.baseAddress, 2, offset) }
        // A read error (a directory, say) is left to libpcap to report, as for any plain file.
        return got == 2 && magic == (0x1F, 0x8B) ? .gzip : .plain
    }

    /// Bytes of the file consumed so far (compressed bytes for a gzip file).
    var bytesRead: Int64 {
        if let gzip { return ct_gzip_compressed_offset(gzip) }
        return Int64(ftello(stream))
    }

    /// The gzip layer's error (corrupt data, a stream cut short), if any.
    var gzipError: String? {
        gzip.flatMap { ct_gzip_error($0) }.map { String(cString: $0) }
    }

    /// The current record's bytes, after ``advance()`` returned `true`; valid until the next ``advance()``.
    var frame: UnsafeRawBufferPointer {
        guard let header, let data else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: data, count: Int(header.pointee.caplen))
    }

    /// Reads the next record: `true` when one is ready (``time``, ``frame``), `false` at a clean end of the file.
    /// - Throws: ``ConntrackrError`` `truncatedCapture` when the file ends inside a record or its gzip stream is
    ///   damaged or cut short.
    func advance() throws(ConntrackrError) -> Bool {
        while true {
            switch pcap_next_ex(handle.raw, &header, &data) {
            case 1:
                guard let header, data != nil else { continue }
                time = nanosecondTimestamp(header)
                return true
            case PCAP_ERROR_BREAK:  // end of file
                if let failure = endFailure() { throw failure }
                return false
            default:
                throw readFailure()
            }
        }
    }

    /// The error to report when libpcap failed to read a record.
    func readFailure() -> ConntrackrError {
        ConntrackrError(.truncatedCapture, "\(path): \(gzipError ?? handle.lastError)")
    }

    /// The error to report at libpcap's end of file, when the gzip layer says the end was not clean.
    func endFailure() -> ConntrackrError? {
        gzipError.map { ConntrackrError(.truncatedCapture, "\(path): \($0)") }
    }

    /// The size of the file on disk, when it is a regular file (not a pipe).
    static func size(of path: String) -> Int64? {
        var status = stat()
        let result = path == "-" ? fstat(STDIN_FILENO, &status) : stat(path, &status)
        guard result == 0, (status.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(status.st_size)
    }
}
