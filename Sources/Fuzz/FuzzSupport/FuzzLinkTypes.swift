public import ConnCore

#if canImport(Glibc)
    import Glibc
#endif

/// The link types the fuzz targets pick from, by one input byte.
public enum FuzzLinkTypes: Sendable {
    /// Every pcap link-type number that ``LinkType/init(rawValue:)`` accepts, so each framing the parser knows
    /// is reachable (several numbers share a framing, which is what lets the fuzzer find a mix-up between them).
    public static let all: [LinkType] = [1, 113, 276, 12, 14, 101, 228, 229, 0, 108].map { LinkType(rawValue: $0)! }

    /// The byte that selects `linkType` in a fuzz input.
    public static func selector(for linkType: LinkType) -> UInt8 {
        UInt8(all.firstIndex(of: linkType)!)
    }
}

/// What a fuzz entry point does with the violations a property check found: print them and abort, which libFuzzer
/// reports as a crash and saves the input for.
public enum FuzzFailure: Sendable {
    public static func abortIfAny(_ violations: [String]) {
        guard !violations.isEmpty else { return }
        // Straight to the descriptor: stdout is buffered and would be lost in the abort.
        let text = violations.map { "fuzz property violated: \($0)\n" }.joined()
        _ = Array(text.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        fatalError("\(violations.count) fuzz property violation(s); libFuzzer keeps the input")
    }
}

/// Hex text of bytes, for messages that must let a reader rebuild the input.
public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var text: [UInt8] = []
    for byte in bytes {
        text.append(digits[Int(byte >> 4)])
        text.append(digits[Int(byte & 0xF)])
    }
    return String(decoding: text, as: UTF8.self)
}
