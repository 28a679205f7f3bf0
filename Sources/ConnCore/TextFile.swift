#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading small text files (allowlists, the configuration, /proc tables) with errors a user can act on.
public enum TextFile: Sendable {
    /// What a file must be before its contents are read.
    public enum Requirement: Hashable, Sendable {
        /// A regular file, not reached through a symbolic link at its last component, owned by root or by the
        /// effective user, and not writable by group or others: what a file the agent reads as root to configure
        /// itself must be, so that no other user can write it, or point the agent at another file (a symbolic link
        /// planted where the file is expected, a FIFO that blocks the agent).
        /// - Important: the directories on the path are not checked: keep the file in a directory only root writes.
        case trusted
        /// Whatever `open(2)` reads: kernel tables under `/proc`.
        case any
    }

    /// Why a file was refused before it was read.
    public enum Refusal: Hashable, Sendable {
        /// The last component of the path is a symbolic link.
        case symbolicLink
        /// Not a regular file: a directory, FIFO, socket or device (its kind).
        case notRegularFile(kind: String)
        /// Owned by neither root nor the effective user (the owner's uid).
        case untrustedOwner(uid: UInt32)
        /// Writable by group or others (the permission bits).
        case writableByOthers(mode: UInt32)
    }

    /// Why a read failed: the errno, so callers can treat a missing file differently from an unreadable one, or
    /// the ``Refusal`` of a file that is not ``Requirement/trusted``.
    public struct ReadError: Error, Hashable, Sendable {
        public var path: String
        public var errno: Int32
        /// Set when the file was refused rather than unreadable (``errno`` is then `EPERM`).
        public var refusal: Refusal?

        public init(path: String, errno: Int32, refusal: Refusal? = nil) {
            self.path = path
            self.errno = errno
            self.refusal = refusal
        }

        /// What is wrong, in words a user can act on: the system's description of ``errno``, or the refusal and
        /// how to mend it.
        public var text: String {
            switch refusal {
            case nil: String(cString: strerror(errno))
            case .symbolicLink: "refused: it is a symbolic link (name the file itself)"
            case .notRegularFile(let kind): "refused: it is a \(kind), not a regular file"
            case .untrustedOwner(let uid): "refused: it is owned by uid \(uid), not by root (chown root it)"
            case .writableByOthers(let mode):
                "refused: it is writable by group or others (mode \(String(mode & 0o7777, radix: 8)); chmod go-w it)"
            }
        }
    }

    /// The bytes of `path`, at most `limit` of them (a larger file is an `EFBIG` error rather than a memory spike).
    ///
    /// With ``Requirement/trusted`` (the default) the file is opened without following a symbolic link at its last
    /// component and without blocking (`O_NOFOLLOW | O_NONBLOCK`), then checked on the open descriptor (`fstat`),
    /// so what is checked is what is read.
    public static func contents(
        of path: String,
        limit: Int = 16 << 20,
        requiring requirement: Requirement = .trusted
    ) throws(ReadError) -> [UInt8] {
        let trusted = requirement == .trusted
        let fd = open(path, O_RDONLY | O_CLOEXEC | (trusted ? O_NOFOLLOW | O_NONBLOCK | O_NOCTTY : 0))
        guard fd >= 0 else {
            let error = errno
            // O_NOFOLLOW fails with ELOOP when the last component is a symbolic link.
            if trusted && error == ELOOP { throw ReadError(path: path, errno: EPERM, refusal: .symbolicLink) }
            throw ReadError(path: path, errno: error)
        }
        defer { close(fd) }
        if trusted, let refusal = try refusal(of: fd, path: path) {
            throw ReadError(path: path, errno: EPERM, refusal: refusal)
        }
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

    /// Why the open file `fd` is not ``Requirement/trusted``, or `nil` when it is.
    private static func refusal(of fd: Int32, path: String) throws(ReadError) -> Refusal? {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw ReadError(path: path, errno: errno) }
        let type = status.st_mode & S_IFMT
        guard type == S_IFREG else {
            let kind =
                switch type {
                case S_IFDIR: "directory"
                case S_IFIFO: "FIFO"
                case S_IFSOCK: "socket"
                case S_IFCHR: "character device"
                case S_IFBLK: "block device"
                default: "special file"
                }
            return .notRegularFile(kind: kind)
        }
        guard status.st_uid == 0 || status.st_uid == geteuid() else { return .untrustedOwner(uid: status.st_uid) }
        guard status.st_mode & (S_IWGRP | S_IWOTH) == 0 else { return .writableByOthers(mode: status.st_mode) }
        return nil
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
