import CXDP
public import ConnCore

/// The scan rule and block policy the XDP program applies itself (kernel enforcement): at the SYN that takes a
/// (source, destination) pair over the threshold, the program blocks the source's unit and drops the SYN, so a
/// scanner gets answers on the threshold's worth of ports at most, whatever its rate. The rule is the user-space
/// detector's (`bpf/scan_rule.h`, checked against it by a differential test); the allowlist, the per-minute budget
/// and the blocklist cap are the ``ConnCore/BlockController``'s.
public struct KernelEnforcement: Hashable, Sendable {
    /// The largest threshold the program holds ports for; above it detection stays in user space.
    public static let maxPortThreshold = Int(CT_SCAN_RULE_MAX_THRESHOLD)
    /// The most blocks per minute the program's budget holds; a larger setting is capped to it in the kernel.
    public static let maxBlocksPerMinute = Int(CT_MAX_BLOCKS_PER_MINUTE)
    /// The pairs the program tracks at once (least recently active evicted first).
    public static let maxTrackedPairs = Int(CT_SCAN_MAX_PAIRS)

    public let rule: ScanRule
    public let policy: BlockPolicy

    /// The program's enforcement of `rule` and `policy`, or `nil` when the program cannot hold the rule (a
    /// threshold above ``maxPortThreshold``).
    public init?(rule: ScanRule, policy: BlockPolicy) {
        guard (1...Self.maxPortThreshold).contains(rule.portThreshold), rule.window > .zero else { return nil }
        self.rule = rule
        self.policy = policy
    }

    /// The ports that never count, as the program's bitmap (CT_PORT_BITMAP_WORDS words).
    var ignoredPortWords: [UInt64] {
        let words = rule.ignoredPorts.bitmap
        return words.count == Int(CT_PORT_BITMAP_WORDS) ? words : Array(repeating: 0, count: Int(CT_PORT_BITMAP_WORDS))
    }

    var config: ct_scan_config {
        var config = ct_scan_config()
        config.port_threshold = UInt32(rule.portThreshold)
        config.max_blocks_per_minute = UInt32(clamping: min(max(policy.maxBlocksPerMinute, 1), Self.maxBlocksPerMinute))
        config.window_ns = rule.window.nanosecondsClamped
        config.block_ttl_ns = policy.ttl.map { max($0.nanosecondsClamped, 1) } ?? 0
        config.max_blocked = UInt64(clamping: max(policy.maxBlocked, 0))
        config.ipv6_prefix_len = UInt8(clamping: min(max(policy.ipv6PrefixLength, 1), 128))
        config.one_destination = rule.destinationUnit == .host ? 1 : 0
        return config
    }
}

/// The XDP program's scan-rule counters, summed over CPUs.
public struct KernelScanStatistics: Hashable, Sendable {
    /// SYNs that took a pair over the threshold.
    public var scans: UInt64
    /// Blocks the program made.
    public var blocks: UInt64
    public var refusedAllowlisted: UInt64
    public var refusedRateLimited: UInt64
    public var refusedFull: UInt64
    public var refusedFailed: UInt64
    /// Pairs the program started tracking; beyond ``KernelEnforcement/maxTrackedPairs`` each evicts another.
    public var pairsInserted: UInt64
    /// SYNs the rule could not track.
    public var untracked: UInt64

    init(_ stats: ct_scan_stats) {
        scans = stats.scans
        blocks = stats.blocks
        refusedAllowlisted = stats.refused_allowlisted
        refusedRateLimited = stats.refused_rate_limited
        refusedFull = stats.refused_full
        refusedFailed = stats.refused_failed
        pairsInserted = stats.pairs_inserted
        untracked = stats.untracked
    }
}
