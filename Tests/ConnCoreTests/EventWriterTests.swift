import ConnCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Event writer")
struct EventWriterTests {
    static let attempt = ConnectionAttempt(
        time: Timestamp(seconds: 1_619_623_685), source: IPAddress("198.51.100.56")!, sourcePort: 5973,
        destination: IPAddress("203.0.113.5")!, destinationPort: 80
    )

    @Test("A reader that never reads costs dropped events, never a stalled capture thread", .timeLimit(.minutes(1)))
    func slowReaderDrops() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let writer = EventWriter(fileDescriptor: fds[1], format: .json, policy: .dropWhenBehind(maxQueuedBytes: 64 << 10))
        // Far more than the pipe (64 KiB) and the queue (64 KiB) can hold; nobody reads.
        for _ in 0..<200 {
            for _ in 0..<100 { writer.emit(.newConnection(Self.attempt)) }
            writer.flush()
        }
        #expect(writer.droppedEvents > 0)
        #expect(writer.writtenEvents + writer.droppedEvents == 20_000)
        // Let the writer thread go: drain the pipe, then close the write end through the writer.
        let drain = Thread { var buffer = [UInt8](repeating: 0, count: 65536); while read(fds[0], &buffer, buffer.count) > 0 {} }
        drain.start()
        writer.close()
        close(fds[1])
    }

    @Test("Lossless writing keeps every line, in order")
    func lossless() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        let writer = EventWriter(fileDescriptor: fds[1], format: .text, policy: .lossless)
        let reader = Thread.collecting(from: fds[0])
        for port in 0..<5000 {
            var attempt = Self.attempt
            attempt.destinationPort = UInt16(port)
            writer.emit(.newConnection(attempt))
        }
        writer.close()
        close(fds[1])
        let lines = reader.wait().split(separator: UInt8(ascii: "\n"))
        #expect(lines.count == 5000)
        #expect(String(decoding: lines.last ?? [], as: UTF8.self).hasSuffix("203.0.113.5:4999"))
        #expect(writer.droppedEvents == 0)
    }
}

/// A minimal POSIX thread for tests.
final class Thread: @unchecked Sendable {
    private let body: () -> Void
    private var handle = pthread_t()
    private var result: [UInt8] = []

    init(_ body: @escaping () -> Void) { self.body = body }

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&handle, nil, { raw in
            let thread = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
            thread.body()
            return nil
        }, context)
    }

    /// A thread that reads `fd` to its end; `wait()` returns what it read.
    static func collecting(from fd: Int32) -> Thread {
        let box = Thread {}
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count <= 0 { break }
                box.result += buffer[0..<count]
            }
        }
        thread.result = []
        thread.box = box
        thread.start()
        return thread
    }

    private var box: Thread?

    func wait() -> [UInt8] {
        pthread_join(handle, nil)
        return box?.result ?? result
    }
}
