public import ConnCore
public import ConnTesting

/// A `FuzzPipeline` input: pipeline settings and a sequence of frames and batch ends, decoded from bytes so that
/// every byte string is a valid input and small mutations make small changes.
///
/// Layout: four setting bytes, then records. Settings: port threshold (`b0 % 9`), scan window and retransmit
/// window (1 to 4 seconds each, from the two low bit pairs of `b1`), tracked-pair cap (`1 + b2 % 64`) and
/// tracked-connection cap (`1 + b3 % 64`); the caps are tiny so that eviction happens all the time. Each record
/// starts with a tag byte whose low two bits say what follows:
/// - `0` raw frame: time step, length, then that many bytes; the link type is `FuzzLinkTypes.all[(tag >> 2) % 10]`.
/// - `1` built TCP segment: time step, source, destination, source port, destination port (2 bytes), flags; built
///   by ``FrameBuilder`` behind the link layer `(tag >> 2) % 5`, so that scans and evictions are easy to reach.
/// - `2` end of batch: time step.
/// - `3` built TCP segment as for `1`, then a position and a value XORed into the frame there (damaged frames).
///
/// Time starts at 2023-11-14T22:13:20Z. A time step `d` below 0xF0 moves it forward by `d` × 20 ms; from 0xF0 on
/// it moves back by `(d - 0xEF)` × 100 ms, as a clock step or an unsorted capture does.
public struct PipelineFuzzInput: Hashable, Sendable {
    /// One thing done to the pipeline.
    public enum Step: Hashable, Sendable {
        case frame([UInt8], LinkType, Timestamp)
        case endOfBatch(Timestamp)
    }

    public var configuration: ConnectionPipeline.Configuration
    public var steps: [Step]

    public static let startTime = Timestamp(seconds: 1_700_000_000)
    /// The source and destination addresses built segments use: 16 sources and 4 destinations per family.
    public static let sources4 = (1...16).map { IPAddress(ipv4: 0xC633_6400 | UInt32($0)) }  // 198.51.100.x
    public static let sources6 = (1...16).map { IPAddress(high: 0x2001_0DB8_0001_0000, low: UInt64($0)) }
    public static let destinations4 = (1...4).map { IPAddress(ipv4: 0xCB00_7100 | UInt32($0)) }  // 203.0.113.x
    public static let destinations6 = (1...4).map { IPAddress(high: 0x2001_0DB8_0000_0000, low: UInt64($0)) }
    public static let flagChoices: [TCPFlags] = [
        .syn, [.syn, .ack], .ack, .rst, [.syn, .fin], [.syn, .psh], [], .fin,
    ]
    public static let links: [LinkLayer] = [
        .ethernet(), .ethernet(vlanTags: [VLANTag(tpid: 0x88A8, id: 100), VLANTag(id: 10)]), .linuxCooked,
        .linuxCooked2, .rawIP,
    ]

    /// Decodes any bytes; a record cut short by the end of the input is dropped.
    public init(_ bytes: UnsafeRawBufferPointer) {
        var reader = ByteReader(bytes)
        let header = (reader.next() ?? 0, reader.next() ?? 0, reader.next() ?? 0, reader.next() ?? 0)
        configuration = ConnectionPipeline.Configuration(
            scanRule: ScanRule(
                portThreshold: Int(header.0 % 9),
                window: .seconds(1 + Int(header.1 & 3)),
                maxTrackedPairs: 1 + Int(header.2 % 64)
            ),
            retransmitWindow: .seconds(1 + Int(header.1 >> 2 & 3)),
            maxTrackedConnections: 1 + Int(header.3 % 64)
        )
        steps = []
        var time = Self.startTime
        func step(_ byte: UInt8) {
            time =
                byte < 0xF0
                ? time + .milliseconds(20 * Int(byte)) : time + .milliseconds(-100 * Int(byte - 0xEF))
        }
        while let tag = reader.next() {
            switch tag & 3 {
            case 0:
                guard let delta = reader.next(), let length = reader.next(), let frame = reader.take(Int(length))
                else { return }
                step(delta)
                steps.append(.frame(frame, FuzzLinkTypes.all[Int(tag >> 2) % FuzzLinkTypes.all.count], time))
            case 2:
                guard let delta = reader.next() else { return }
                step(delta)
                steps.append(.endOfBatch(time))
            default:
                guard let fields = reader.take(7) else { return }
                step(fields[0])
                let linkIndex = Int(tag >> 2) % Self.links.count
                var frame = Self.segment(fields, linkIndex: linkIndex)
                if tag & 3 == 3 {
                    guard let position = reader.next(), let value = reader.next() else { return }
                    frame[Int(position) % frame.count] ^= value
                }
                steps.append(.frame(frame, Self.links[linkIndex].linkType, time))
            }
        }
    }

    /// The TCP segment of a built record: fields are time step, source, destination, source port, destination
    /// port (2 bytes, big-endian) and flags.
    static func segment(_ fields: [UInt8], linkIndex: Int) -> [UInt8] {
        // Building a frame costs far more than running it through the pipeline, and mutated inputs repeat most of
        // their segments, so built frames are remembered (bounded: the cache is dropped when it fills up).
        let key = fields[1...6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } << 3 | UInt64(linkIndex)
        if let cached = segmentCache[key] { return cached }
        if segmentCache.count >= 100_000 { segmentCache.removeAll() }
        let built = buildSegment(fields, link: links[linkIndex])
        segmentCache[key] = built
        return built
    }

    /// Fuzz targets run one input at a time on one thread.
    nonisolated(unsafe) static var segmentCache: [UInt64: [UInt8]] = [:]

    static func buildSegment(_ fields: [UInt8], link: LinkLayer) -> [UInt8] {
        let isIPv6 = fields[1] & 0x80 != 0
        let source = (isIPv6 ? sources6 : sources4)[Int(fields[1] & 0x0F)]
        let destination = (isIPv6 ? destinations6 : destinations4)[Int(fields[2] & 0x03)]
        return FrameBuilder.tcp(
            from: source,
            40_000 + UInt16(fields[3]),
            to: destination,
            UInt16(fields[4]) << 8 | UInt16(fields[5]),
            flags: flagChoices[Int(fields[6] & 7)],
            link: link
        )
    }
}

/// Encodes ``PipelineFuzzInput`` records, for the seed corpus.
public struct PipelineFuzzInputWriter: Sendable {
    public private(set) var bytes: [UInt8]

    /// Starts an input with the given setting bytes (see ``PipelineFuzzInput``).
    public init(threshold: UInt8, windows: UInt8, pairCap: UInt8, connectionCap: UInt8) {
        bytes = [threshold, windows, pairCap, connectionCap]
    }

    /// A raw frame of one of ``FuzzLinkTypes/all``, at most 255 bytes (longer frames are cut).
    public mutating func frame(_ frame: [UInt8], linkType: LinkType, step: UInt8) {
        let kept = frame.prefix(255)
        bytes += [FuzzLinkTypes.selector(for: linkType) << 2, step, UInt8(kept.count)] + kept
    }

    /// A built segment: `source` 0...15 (+ 0x80 for IPv6), `destination` 0...3, `flags` indexes
    /// ``PipelineFuzzInput/flagChoices``, `link` indexes ``PipelineFuzzInput/links``.
    public mutating func segment(
        source: UInt8,
        destination: UInt8,
        sourcePort: UInt8,
        destinationPort: UInt16,
        flags: UInt8 = 0,
        link: UInt8 = 0,
        step: UInt8,
        damage: (position: UInt8, value: UInt8)? = nil
    ) {
        bytes += [link << 2 | (damage == nil ? 1 : 3), step, source, destination, sourcePort]
        bytes += [UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF), flags]
        if let damage { bytes += [damage.position, damage.value] }
    }

    public mutating func endOfBatch(step: UInt8) {
        bytes += [2, step]
    }
}

/// Reads an input front to back.
struct ByteReader {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func next() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func take(_ count: Int) -> [UInt8]? {
        guard bytes.count - offset >= count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
}
