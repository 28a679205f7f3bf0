import ConnCore
import ConnTesting
import Foundation
import Testing

@testable import ConnCapture

/// A replay reads plain classic pcap files with ``ClassicPcapRecords`` instead of libpcap's `pcap_next_ex`. Here
/// both read the same files, and must give the same records (time and bytes) and end the same way, with the same
/// error text: the lab's captures, and files written byte by byte with the headers libpcap treats specially, cut
/// at every length.
@Suite("Classic pcap records read as libpcap reads them")
struct ClassicPcapRecordsTests {
    /// What reading a whole file gives: every record, then the end or the error.
    struct Reading: Equatable, CustomStringConvertible {
        var records: [(time: Timestamp, bytes: [UInt8])] = []
        var ending = "end"

        static func == (lhs: Reading, rhs: Reading) -> Bool {
            lhs.ending == rhs.ending && lhs.records.count == rhs.records.count
                && zip(lhs.records, rhs.records).allSatisfy { $0.time == $1.time && $0.bytes == $1.bytes }
        }

        var description: String {
            let last = records.last.map { "last at \($0.time.nanoseconds) ns, \($0.bytes.count) bytes" } ?? "none"
            return "\(records.count) records (\(last)), then \(ending)"
        }
    }

    static func read(_ path: String, withLibpcap: Bool) -> Reading {
        var reading = Reading()
        do {
            let file = try CaptureFile(path: path, readingEveryRecordWithLibpcap: withLibpcap)
            while try file.advance() { reading.records.append((file.time, Array(file.frame))) }
        } catch {
            reading.ending = error.message
        }
        return reading
    }

    /// A pcap file header in this machine's byte order (or swapped).
    static func fileHeader(
        magic: UInt32 = 0xA1B2_C3D4,
        major: UInt16 = 2,
        minor: UInt16 = 4,
        snapLength: UInt32 = 65_535,
        swapped: Bool = false
    ) -> [UInt8] {
        func word(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: swapped ? value.byteSwapped : value, Array.init) }
        func half(_ value: UInt16) -> [UInt8] { withUnsafeBytes(of: swapped ? value.byteSwapped : value, Array.init) }
        return word(magic) + half(major) + half(minor) + word(0) + word(0) + word(snapLength) + word(1)
    }

    /// A record: its header fields as written, and `captured` bytes of a frame (a SYN, padded).
    static func record(seconds: UInt32, fraction: UInt32, captured: UInt32, original: UInt32? = nil) -> [UInt8] {
        func word(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value, Array.init) }
        let frame = FrameBuilder.tcp(
            from: IPAddress("198.51.100.7")!, UInt16(truncatingIfNeeded: seconds),
            to: IPAddress("203.0.113.5")!, UInt16(truncatingIfNeeded: captured)
        )
        var bytes = Array(frame.prefix(Int(captured)))
        bytes += (0..<(Int(captured) - bytes.count)).map { UInt8(truncatingIfNeeded: $0) }
        return word(seconds) + word(fraction) + word(captured) + word(original ?? captured) + bytes
    }

    static func assertSameReading(_ bytes: [UInt8], _ name: String) {
        let file = TemporaryFile(bytes)
        let ours = read(file.path, withLibpcap: false)
        let libpcap = read(file.path, withLibpcap: true)
        #expect(ours == libpcap, "\(name): ours \(ours), libpcap \(libpcap)")
    }

    @Test("The lab's captures read the same")
    func labCaptures() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Captures")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names.contains { $0.hasSuffix(".pcap") })
        for name in names where name.hasSuffix(".pcap") || name.hasSuffix(".pcapng") {
            let path = directory.appendingPathComponent(name).path
            let ours = Self.read(path, withLibpcap: false)
            #expect(!ours.records.isEmpty, "\(name)")
            #expect(ours == Self.read(path, withLibpcap: true), "\(name)")
        }
    }

    /// Times at the ends of the fields (libpcap 1.10 reads both as signed 32-bit numbers), captured lengths at and
    /// past the snapshot length and libpcap's maximum, in microsecond and nanosecond files.
    static let oddRecords: [[UInt8]] = [
        record(seconds: 1_619_623_685, fraction: 123_456, captured: 60),
        record(seconds: 0x7FFF_FFFF, fraction: 999_999, captured: 54),
        record(seconds: 0x8000_0000, fraction: 1_000_000, captured: 54),
        record(seconds: 0xFFFF_FFFF, fraction: 0xFFFF_FFFF, captured: 54),
        record(seconds: 7, fraction: 999_999_999, captured: 40, original: 20),
        record(seconds: 8, fraction: 0, captured: 0),
        record(seconds: 9, fraction: 1, captured: 150),  // past a snapshot length of 100
        record(seconds: 10, fraction: 2, captured: 70_000),  // past 65,535, within libpcap's maximum
        record(seconds: 11, fraction: 3, captured: 262_144),
    ]

    @Test(
        "Odd record headers read the same, whatever the snapshot length and timestamp unit",
        arguments: [
            (0xA1B2_C3D4, 65_535), (0xA1B2_3C4D, 65_535), (0xA1B2_C3D4, 100), (0xA1B2_3C4D, 0),
            (0xA1B2_C3D4, 300_000), (0xA1B2_C3D4, 262_144),
        ] as [(UInt32, UInt32)]
    )
    func oddRecords(magic: UInt32, snapLength: UInt32) {
        let header = Self.fileHeader(magic: magic, snapLength: snapLength)
        Self.assertSameReading(header + Self.oddRecords.joined(), "magic \(magic), snaplen \(snapLength)")
    }

    @Test("A capture length past libpcap's maximum fails the same", arguments: [100, 65_535, 300_000] as [UInt32])
    func captureLengthPastTheMaximum(snapLength: UInt32) {
        let header = Self.fileHeader(snapLength: snapLength)
        let tooLong = Self.record(seconds: 5, fraction: 5, captured: 262_145)
        Self.assertSameReading(header + Self.oddRecords[0] + tooLong + Self.oddRecords[1], "snaplen \(snapLength)")
    }

    /// Cut inside the file header, a record header, a record within the snapshot length and one past it.
    @Test("A file cut at any length reads the same", arguments: [65_535, 100] as [UInt32])
    func everyTruncation(snapLength: UInt32) {
        let whole = Self.fileHeader(snapLength: snapLength)
            + Self.oddRecords[0] + Self.oddRecords[6] + Self.record(seconds: 12, fraction: 4, captured: 5_000)
        var compared = 0
        for length in 0...whole.count where length < 400 || length % 97 == 0 || length > whole.count - 40 {
            let file = TemporaryFile(Array(whole.prefix(length)))
            let ours = Self.read(file.path, withLibpcap: false)
            let libpcap = Self.read(file.path, withLibpcap: true)
            #expect(ours == libpcap, "cut at \(length): ours \(ours), libpcap \(libpcap)")
            compared += 1
        }
        #expect(compared > 400)
    }

    /// Files of random records: random header fields, lengths mostly small but sometimes past the snapshot length or
    /// libpcap's maximum, junk bytes, a random cut. A capture file is outside input; whatever it holds, both readers
    /// must see the same.
    @Test("Random files read the same", arguments: 0..<8)
    func randomFiles(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for file in 0..<40 {
            let snapLength = [0, 64, 1_500, 65_535, 262_144, 1_000_000][Int.random(in: 0..<6, using: &random)]
            let magic: UInt32 = Bool.random(using: &random) ? 0xA1B2_C3D4 : 0xA1B2_3C4D
            var bytes = Self.fileHeader(magic: magic, snapLength: UInt32(snapLength))
            for _ in 0..<Int.random(in: 0..<30, using: &random) {
                let captured: UInt32 =
                    switch Int.random(in: 0..<20, using: &random) {
                    case 0: UInt32.random(in: 262_145 ... .max, using: &random)
                    case 1: UInt32.random(in: 1_500...262_144, using: &random)
                    default: UInt32.random(in: 0...200, using: &random)
                    }
                let header = [
                    UInt32.random(in: .min ... .max, using: &random), UInt32.random(in: .min ... .max, using: &random),
                    captured, UInt32.random(in: .min ... .max, using: &random),
                ]
                bytes += header.flatMap { withUnsafeBytes(of: $0, Array.init) }
                // Both readers stop at a length past the maximum: only a few bytes follow it.
                let body = captured > 262_144 ? Int.random(in: 0...64, using: &random) : Int(captured)
                if body <= 200 {
                    bytes += (0..<body).map { _ in UInt8.random(in: 0...255, using: &random) }
                } else {
                    bytes += [UInt8](repeating: UInt8(truncatingIfNeeded: body), count: body)
                }
            }
            let cut = Bool.random(using: &random) ? bytes.count : Int.random(in: 0...bytes.count, using: &random)
            Self.assertSameReading(Array(bytes.prefix(cut)), "seed \(seed), file \(file)")
        }
    }

    /// Only native classic pcap 2.4 headers are read in place; the rest stay with libpcap, and reading them through
    /// `CaptureFile` must still agree with it.
    @Test("Swapped, older and nanosecond-swapped files are left to libpcap")
    func filesLeftToLibpcap() {
        func header(_ bytes: [UInt8]) -> ClassicPcapRecords.FileHeader? { bytes.withUnsafeBytes { .init($0) } }
        #expect(header(Self.fileHeader())?.nanosecondTimes == false)
        #expect(header(Self.fileHeader(magic: 0xA1B2_3C4D))?.nanosecondTimes == true)
        #expect(header(Array(Self.fileHeader().prefix(23))) == nil)
        #expect(header(Self.fileHeader(minor: 3)) == nil)
        #expect(header(Self.fileHeader(major: 3)) == nil)
        #expect(header(Self.fileHeader(swapped: true)) == nil)
        #expect(header(Self.fileHeader(magic: 0xA1B2_3C4D, swapped: true)) == nil)
        #expect(header(Self.fileHeader(magic: 0x0A0D_0D0A)) == nil)  // pcapng
        let records = Self.oddRecords[0] + Self.oddRecords[1]
        Self.assertSameReading(Self.fileHeader(minor: 3) + records, "version 2.3")
        Self.assertSameReading(Self.fileHeader(swapped: true) + records, "byte-swapped")
        Self.assertSameReading(Self.fileHeader(magic: 0xA1B2_3C4D, swapped: true) + records, "swapped, ns")
    }
}
