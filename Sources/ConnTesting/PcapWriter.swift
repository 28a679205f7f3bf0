public import ConnCore

/// Writes capture files in memory: classic pcap (microsecond or nanosecond) or pcapng.
///
/// Tests build captures with it; `conntrackr-synth` writes benchmark captures with it.
public struct PcapWriter: Sendable {
    /// The container format.
    public enum Format: Hashable, Sendable {
        case pcap(nanosecond: Bool)
        case pcapng
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
            // Section header block.
            append32(0x0A0D_0D0A)
            append32(28)
            append32(0x1A2B_3C4D)
            append16(1)
            append16(0)
            append64(UInt64.max)  // section length unknown
            append32(28)
            // Interface description block with if_tsresol = 9 (nanoseconds).
            append32(1)
            append32(32)
            append16(UInt16(linkType.rawValue))
            append16(0)
            append32(snapLength)
            append16(9)  // if_tsresol
            append16(1)
            bytes += [9, 0, 0, 0]
            append32(0)  // opt_endofopt
            append32(32)
        }
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
            let padded = (frame.count + 3) / 4 * 4
            let total = UInt32(32 + padded)
            append32(6)
            append32(total)
            append32(0)  // interface 0
            let stamp = UInt64(bitPattern: time.nanoseconds)
            append32(UInt32(stamp >> 32))
            append32(UInt32(stamp & 0xFFFF_FFFF))
            append32(captured)
            append32(original)
            bytes += frame
            bytes += Array(repeating: 0, count: padded - frame.count)
            append32(total)
        }
    }

    private mutating func append16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    private mutating func append32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    private mutating func append64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
}
