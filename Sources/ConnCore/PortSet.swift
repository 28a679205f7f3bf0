/// A set of TCP ports held as a 65,536-bit bitmap: asking whether a port is in it costs one load and a bit test,
/// however many ports or ranges it holds, so a check per SYN keeps the per-packet cost flat.
///
/// ``bitmap`` is the layout a BPF program can take as is (an array map of 1,024 `u64`, or 8,192 bytes): port *p*
/// is bit `p % 64` of word `p / 64`, with bit 0 the least significant.
public struct PortSet: Hashable, Sendable, CustomStringConvertible {
    /// The words of the bitmap; empty for the empty set, else ``PortSet/wordCount`` words.
    private var words: [UInt64]

    /// The number of 64-bit words of a full bitmap (65,536 ports).
    public static let wordCount = 1024

    /// The empty set.
    public init() { words = [] }

    /// The ports of `ranges` (single ports are one-port ranges, `25...25`).
    public init(_ ranges: some Sequence<ClosedRange<UInt16>>) {
        words = []
        for range in ranges { insert(range) }
    }

    /// The ports of a list such as `["25", "465", "8000-8100"]`: each item a port (0-65535) or a range LOW-HIGH,
    /// with LOW ≤ HIGH.
    /// - Throws: ``ConntrackrError`` (`invalidConfiguration`) naming the first item that is neither.
    public init(parsing items: some Sequence<String>) throws(ConntrackrError) {
        self.init()
        for item in items {
            guard let range = Self.range(item) else {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "\(item.debugDescription) is not a port (0-65535) or a range of ports LOW-HIGH"
                )
            }
            insert(range)
        }
    }

    private static func range(_ item: String) -> ClosedRange<UInt16>? {
        let parts = item.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        let bounds = parts.map { UInt16($0.filter { !$0.isWhitespace }) }
        guard let low = bounds.first ?? nil, let high = bounds.last ?? nil, low <= high else { return nil }
        return low...high
    }

    /// Adds the ports of `range`.
    public mutating func insert(_ range: ClosedRange<UInt16>) {
        if words.isEmpty { words = Array(repeating: 0, count: Self.wordCount) }
        for port in range { words[Int(port >> 6)] |= 1 << UInt64(port & 63) }
    }

    /// Whether `port` is in the set.
    @inline(__always)
    public func contains(_ port: UInt16) -> Bool {
        !words.isEmpty && words[Int(port >> 6)] & (1 << UInt64(port & 63)) != 0
    }

    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    /// How many ports the set holds.
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The whole bitmap, ``wordCount`` words (all zero for the empty set), for a BPF map or a lookup table.
    public var bitmap: [UInt64] { words.isEmpty ? Array(repeating: 0, count: Self.wordCount) : words }

    /// The set as ascending, disjoint, non-adjacent ranges.
    public var ranges: [ClosedRange<UInt16>] {
        var ranges: [ClosedRange<UInt16>] = []
        var start: Int?
        for port in 0...65_536 {
            let member = port < 65_536 && contains(UInt16(port))
            if member, start == nil { start = port }
            if !member, let low = start {
                ranges.append(UInt16(low)...UInt16(port - 1))
                start = nil
            }
        }
        return ranges
    }

    /// `25,465,8000-8100`; empty for the empty set. ``init(parsing:)`` reads it back (split at commas).
    public var description: String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            .joined(separator: ",")
    }

    // Equal sets are equal whether or not their storage was ever allocated.
    public static func == (lhs: PortSet, rhs: PortSet) -> Bool { lhs.bitmap == rhs.bitmap }
    public func hash(into hasher: inout Hasher) { hasher.combine(bitmap) }
}
