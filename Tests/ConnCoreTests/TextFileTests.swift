import ConnCore
import ConnTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Text files read as root")
struct TextFileTests {
    @Test("A trusted read refuses a symbolic link, a group-writable file and a FIFO; an unchecked read does not")
    func refusals() throws {
        let target = TemporaryFile(Array("scan-ports: 3\n".utf8), suffix: ".yaml")
        #expect(chmod(target.path, 0o644) == 0)
        #expect(try TextFile.contents(of: target.path) == Array("scan-ports: 3\n".utf8))

        let link = target.path + ".link"
        #expect(symlink(target.path, link) == 0)
        defer { unlink(link) }
        let linkError = try #require(throws: TextFile.ReadError.self) { try TextFile.contents(of: link) }
        #expect(linkError.refusal == .symbolicLink)
        #expect(linkError.text == "refused: it is a symbolic link (name the file itself)")
        #expect(try TextFile.contents(of: link, requiring: .any) == Array("scan-ports: 3\n".utf8))

        #expect(chmod(target.path, 0o664) == 0)
        let modeError = try #require(throws: TextFile.ReadError.self) { try TextFile.contents(of: target.path) }
        #expect(modeError.refusal == .writableByOthers(mode: UInt32(S_IFREG) | 0o664))
        #expect(modeError.text == "refused: it is writable by group or others (mode 664; chmod go-w it)")

        let fifo = target.path + ".fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        // Refused without blocking on the open (no writer will ever come).
        let fifoError = try #require(throws: TextFile.ReadError.self) { try TextFile.contents(of: fifo) }
        #expect(fifoError.refusal == .notRegularFile(kind: "FIFO"))
    }

    @Test("A file owned by another user is refused", .enabled(if: geteuid() == 0, "chown needs root"))
    func foreignOwner() throws {
        let file = TemporaryFile(Array("x\n".utf8), suffix: ".txt")
        #expect(chown(file.path, 1234, 1234) == 0)
        let error = try #require(throws: TextFile.ReadError.self) { try TextFile.contents(of: file.path) }
        #expect(error.refusal == .untrustedOwner(uid: 1234))
        #expect(error.text == "refused: it is owned by uid 1234, not by root (chown root it)")
    }

    @Test("/proc tables are read unchecked")
    func procTables() throws {
        #expect(try !TextFile.contents(of: "/proc/self/status", requiring: .any).isEmpty)
    }
}
