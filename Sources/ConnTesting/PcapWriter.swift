public import ConnCore

/// Writes capture files in memory: classic pcap (microsecond or nanosecond) or pcapng.
///
/// Tests build captures with it; `conntrackr-synth` writes benchmark captures with it.
public struct PcapWriter: Sendable {
    /// The container format.
    public enum Format: Hashable, Sendable {
        case pcap(nanosecond: Bool)
        /// pcapng with nanosecond timestamps.
        case pcapng
        /// pcapng whose interface states its time resolution and offset, as a crafted file may: `if_tsresol` as
        /// stored (bit 7 clear: 10^-n seconds; set: 2^-n) and `if_tsoffset`, seconds a reader adds to every record
        /// time. ``write(_:at:originalLength:)`` converts times for a decimal resolution of at most 9;
        /// ``write(_:timestampUnits:)`` writes any raw value.
        case pcapngInterface(timeResolution: UInt8, timeOffsetSeconds: Int64)
    }

    public let format: Format
    public let linkType: LinkType
    public private(set) var bytes: [UInt8] = []

    public init(linkType: LinkType, format: Format = .pcap(nanosecond: false), snapLength: UInt32 = 262_144) {
        self.format = format
        self.linkType = linkType
        switch format {
        case .pcap(let nanosecond):
            append32(nanosecond ? 0xA1B2_3C4D : 0xA1B2_C3D4)
            append16(2)
            append16(4)
            append32(0)  // thiszone
            append32(0)  // sigfigs
            append32(snapLength)
            append32(UInt32(bitPattern: linkType.rawValue))
        case .pcapng:
            appendPcapngHeaders(linkType: linkType, snapLength: snapLength, timeResolution: 9, timeOffset: nil)
        case .pcapngInterface(let resolution, let offset):
            appendPcapngHeaders(linkType: linkType, snapLength: snapLength, timeResolution: resolution, timeOffset: offset)
        }
    }

    private mutating func appendPcapngHeaders(
        linkType: LinkType,
        snapLength: UInt32,
        timeResolution: UInt8,
        timeOffset: Int64?
    ) {
        // Section header block.
        append32(0x0A0D_0D0A)
        append32(28)
        append32(0x1A2B_3C4D)
        append16(1)
        append16(0)
        append64(UInt64.max)  // section length unknown
        append32(28)
        // Interface description block with if_tsresol and, when given, if_tsoffset.
        let total = UInt32(32 + (timeOffset == nil ? 0 : 12))
        append32(1)
        append32(total)
        append16(UInt16(linkType.rawValue))
        append16(0)
        append32(snapLength)
        append16(9)  // if_tsresol
        append16(1)
        bytes += [timeResolution, 0, 0, 0]
        if let timeOffset {
            append16(14)  // if_tsoffset
            append16(8)
            append64(UInt64(bitPattern: timeOffset))
        }
        append32(0)  // opt_endofopt
        append32(total)
    }

    /// Appends one frame. `originalLength` defaults to the frame's length (pass more to mimic a snap length).
    public mutating func write(_ frame: [UInt8], at time: Timestamp, originalLength: Int? = nil) {
        let captured = UInt32(frame.count)
        let original = UInt32(originalLength ?? frame.count)
        switch format {
        case .pcap(let nanosecond):
            append32(UInt32(truncatingIfNeeded: time.seconds))
            let fraction = time.nanoseconds - time.seconds * 1_000_000_000
            append32(UInt32(nanosecond ? fraction : fraction / 1000))
            append32(captured)
            append32(original)
            bytes += frame
        case .pcapng:
            appendEnhancedPacket(frame, timestampUnits: UInt64(bitPattern: time.nanoseconds), originalLength: original)
        case .pcapngInterface(let resolution, let offset):
            precondition(resolution <= 9, "write(_:at:) converts times for a decimal resolution of at most 9 only")
            var divisor: Int64 = 1
            for _ in 0..<(9 - Int(resolution)) { divisor *= 10 }
            let units = (time.nanoseconds &- offset &* 1_000_000_000) / divisor
            appendEnhancedPacket(frame, timestampUnits: UInt64(bitPattern: units), originalLength: original)
        }
    }

    /// Appends one frame to a pcapng file with its raw 64-bit timestamp, in units of the interface's resolution.
    public mutating func write(_ frame: [UInt8], timestampUnits: UInt64) {
        switch format {
        case .pcap: preconditionFailure("raw timestamp units exist only in pcapng")
        case .pcapng, .pcapngInterface:
            appendEnhancedPacket(frame, timestampUnits: timestampUnits, originalLength: UInt32(frame.count))
        }
    }

    private mutating func appendEnhancedPacket(_ frame: [UInt8], timestampUnits stamp: UInt64, originalLength: UInt32) {
        let padded = (frame.count + 3) / 4 * 4
        let total = UInt32(32 + padded)
        append32(6)
        append32(total)
        append32(0)  // interface 0
        append32(UInt32(stamp >> 32))
        append32(UInt32(stamp & 0xFFFF_FFFF))
        append32(UInt32(frame.count))
        append32(originalLength)
        bytes += frame
        bytes += Array(repeating: 0, count: padded - frame.count)
        append32(total)
    }

    private mutating func append16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    private mutating func append32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    private mutating func append64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
}
