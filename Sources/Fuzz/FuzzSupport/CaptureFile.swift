public import ConnCore

#if canImport(Glibc)
    import Glibc
#endif

/// The frames of a classic pcap file (microsecond or nanosecond, either byte order), without libpcap, so that
/// tests anywhere can replay the committed captures frame by frame.
public enum CaptureFile: Sendable {
    /// The link type and frames of the file at `path`; `nil` when it cannot be read or is not classic pcap.
    public static func frames(atPath path: String) -> (linkType: LinkType, frames: [[UInt8]])? {
        guard let bytes = contents(of: path), bytes.count >= 24 else { return nil }
        let magic = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        let swapped: Bool
        switch magic {
        case 0xA1B2_C3D4, 0xA1B2_3C4D: swapped = false
        case 0xD4C3_B2A1, 0x4D3C_B2A1: swapped = true
        default: return nil
        }
        func u32(_ offset: Int) -> UInt32 {
            let little =
                UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
                | UInt32(bytes[offset + 3]) << 24
            return swapped ? little.byteSwapped : little
        }
        guard let linkType = LinkType(rawValue: Int32(bitPattern: u32(20) & 0x0FFF_FFFF)) else { return nil }
        var frames: [[UInt8]] = []
        var offset = 24
        while offset + 16 <= bytes.count {
            let length = Int(u32(offset + 8))
            offset += 16
            guard length <= bytes.count - offset else { break }  // a record cut short ends the file
            frames.append(Array(bytes[offset..<offset + length]))
            offset += length
        }
        return (linkType, frames)
    }

    static func contents(of path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count == 0 { break }
            bytes += chunk[0..<count]
        }
        return ferror(file) == 0 ? bytes : nil
    }
}
