import CDecompress
import CPcap
import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// One capture file open for reading: pcap or pcapng, plain, gzip- or zstd-compressed (told by its first bytes, the
/// gzip magic `1f 8b` or the zstd magic `28 b5 2f fd`, not by its name), through libpcap. The one home of opening a
/// capture file.
///
/// Used by one thread at a time (the replay's capture thread).
final class CaptureFile {
    let path: String
    let handle: PcapHandle
    let linkType: LinkType
    /// The stream libpcap reads; valid until `handle` is closed.
    private let stream: UnsafeMutablePointer<FILE>
    /// The decompressing layer (`CDecompress`) of a compressed file or a pipe, `nil` for a plain file.
    private let decompressor: OpaquePointer?
    /// Reads the records of a plain classic pcap file itself, in place of libpcap; `nil` for every other file.
    private let classicRecords: ClassicPcapRecords?
    /// The current record, after ``advance()`` returned `true`.
    private(set) var time = Timestamp(nanoseconds: 0)
    /// The current record's bytes, after ``advance()`` returned `true`; valid until the next ``advance()``.
    private(set) var frame = UnsafeRawBufferPointer(start: nil, count: 0)

    /// The stdio buffer libpcap reads a plain capture through. libpcap reads each record with two `fread`s; with
    /// stdio's default buffer (one file-system block, 4 KiB) that is a read(2) for every 4 KiB of capture.
    /// A 1 MiB buffer cuts the system calls 256-fold.
    static let readBufferBytes = 1 << 20
    /// The compressed-input buffer and the decompressed stream's stdio buffer of a compressed capture or a pipe.
    static let decompressBufferBytes = 1 << 18

    /// Opens `path` (`-` is standard input, as with `tcpdump -r -`).
    /// - Throws: ``ConntrackrError`` `unreadableCapture` (missing, not a capture, bad gzip or zstd) or
    ///   `unsupportedLinkType`, naming the file.
    /// - Parameter readingEveryRecordWithLibpcap: reads a plain classic pcap file with libpcap too, for the tests that
    ///   hold ``ClassicPcapRecords`` to it.
    init(path: String, readingEveryRecordWithLibpcap: Bool = false) throws(ConntrackrError) {
        self.path = path
        // A duplicate of standard input, since libpcap closes the file it reads.
        let descriptor = path == "-" ? dup(STDIN_FILENO) : Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(String(cString: strerror(errno)))")
        }
        var decompressHandle: OpaquePointer?
        var readBuffer: UnsafeMutableRawPointer?
        let opened: UnsafeMutablePointer<FILE>?
        let start = Self.peek(descriptor)
        switch start {
        case .compressed, .unknown:
            // Unknown (a pipe cannot be peeked at): the layer tells gzip, zstd and plain data apart by the same
            // magic bytes, and copies plain data through.
            opened = ct_decompress_fdopen(descriptor, UInt32(Self.decompressBufferBytes), &decompressHandle)
            if let opened {
                readBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.decompressBufferBytes, alignment: 64)
                setvbuf(opened, readBuffer?.assumingMemoryBound(to: CChar.self), _IOFBF, Self.decompressBufferBytes)
            }
        case .plain(_, let classicHeader):
            opened = fdopen(descriptor, "rb")
            if let opened {
                // A file ClassicPcapRecords reads goes through stdio only for libpcap to read its header.
                if readingEveryRecordWithLibpcap || classicHeader == nil {
                    // glibc ignores the size unless it is given the buffer too.
                    readBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.readBufferBytes, alignment: 64)
                    setvbuf(opened, readBuffer?.assumingMemoryBound(to: CChar.self), _IOFBF, Self.readBufferBytes)
                }
            } else {
                let saved = errno
                close(descriptor)
                errno = saved
            }
        }
        guard let opened else {
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(String(cString: strerror(errno)))")
        }
        // Read by this object's one thread: stdio's lock per fread (two per record) is pure cost.
        ct_stream_lock_by_caller(opened)
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let raw = pcap_fopen_offline_with_tstamp_precision(opened, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer)
        else {
            fclose(opened)  // libpcap takes the file only when it succeeds
            readBuffer?.deallocate()
            let decompressError = decompressHandle.flatMap { ct_decompress_error($0) }.map { String(cString: $0) }
            if let decompressHandle { ct_decompress_free(decompressHandle) }
            let reason = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // libpcap names the file itself in some messages.
            let detail = reason.hasPrefix(path) ? String(reason.dropFirst(path.count).drop { $0 == ":" || $0 == " " }) : reason
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(decompressError ?? detail)")
        }
        let buffer = readBuffer
        let ownedDecompressor = decompressHandle
        handle = PcapHandle(raw) {
            buffer?.deallocate()
            if let ownedDecompressor { ct_decompress_free(ownedDecompressor) }
        }
        stream = opened
        decompressor = decompressHandle
        if case .plain(let offset, let header?) = start, !readingEveryRecordWithLibpcap {
            classicRecords = ClassicPcapRecords(
                descriptor: fileno(opened), at: offset, header: header, snapshotLength: pcap_snapshot(raw)
            )
        } else {
            classicRecords = nil
        }
        do {
            linkType = try handle.linkType(describing: path)
        } catch let error as ConntrackrError {
            throw error
        } catch {
            throw ConntrackrError(.unsupportedLinkType, "\(path): \(error)")
        }
    }

    /// How a file starts, read once, without moving its offset.
    private enum Start {
        /// Cannot be peeked at (a pipe).
        case unknown
        /// gzip or zstd.
        case compressed
        /// Plain data from `offset` (standard input may be open past the start of its file); `classicHeader` when
        /// ``ClassicPcapRecords`` reads its records.
        case plain(offset: Int64, classicHeader: ClassicPcapRecords.FileHeader?)
    }

    /// A plain file is read through stdio alone, with no layer copying its bytes.
    private static func peek(_ descriptor: Int32) -> Start {
        let offset = lseek(descriptor, 0, SEEK_CUR)
        guard offset >= 0 else { return .unknown }
        var bytes = [UInt8](repeating: 0, count: ClassicPcapRecords.fileHeaderBytes)
        let got = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
        // A read error (a directory, say) is left to libpcap to report, as for any plain file.
        let gzip = got >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B
        let zstd = got >= 4 && bytes[0..<4] == [0x28, 0xB5, 0x2F, 0xFD]
        if gzip || zstd { return .compressed }
        var status = stat()
        let regular = fstat(descriptor, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG
        let header = regular ? bytes.prefix(max(got, 0)).withUnsafeBytes { ClassicPcapRecords.FileHeader($0) } : nil
        return .plain(offset: Int64(offset), classicHeader: header)
    }

    /// Bytes of the file consumed so far (compressed bytes for a compressed file).
    var bytesRead: Int64 {
        if let classicRecords { return classicRecords.bytesRead }
        if let decompressor { return ct_decompress_bytes_read(decompressor) }
        return Int64(ftello(stream))
    }

    /// The decompressing layer's error (corrupt data, a stream cut short), if any.
    var decompressError: String? {
        decompressor.flatMap { ct_decompress_error($0) }.map { String(cString: $0) }
    }

    /// Reads the next record: `true` when one is ready (``time``, ``frame``), `false` at a clean end of the file.
    /// - Throws: ``ConntrackrError`` `truncatedCapture` when the file ends inside a record or its compressed stream
    ///   is damaged or cut short.
    func advance() throws(ConntrackrError) -> Bool {
        if let classicRecords {
            switch classicRecords.next() {
            case .record(let seconds, let nanoseconds, let bytes):
                time = Timestamp(clampingSeconds: seconds, nanosecondsPastSecond: nanoseconds)
                frame = bytes
                return true
            case .end:
                return false
            case .failure(let reason):
                throw ConntrackrError(.truncatedCapture, "\(path): \(reason)")
            }
        }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while true {
            switch pcap_next_ex(handle.raw, &header, &data) {
            case 1:
                guard let header, let data else { continue }
                time = nanosecondTimestamp(header)
                frame = UnsafeRawBufferPointer(start: data, count: Int(header.pointee.caplen))
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
    private func readFailure() -> ConntrackrError {
        ConntrackrError(.truncatedCapture, "\(path): \(decompressError ?? handle.lastError)")
    }

    /// The error to report at libpcap's end of file, when the decompressing layer says the end was not clean.
    private func endFailure() -> ConntrackrError? {
        decompressError.map { ConntrackrError(.truncatedCapture, "\(path): \($0)") }
    }

    /// The size of the file on disk, when it is a regular file (not a pipe).
    static func size(of path: String) -> Int64? {
        var status = stat()
        let result = path == "-" ? fstat(STDIN_FILENO, &status) : stat(path, &status)
        guard result == 0, (status.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(status.st_size)
    }
}
