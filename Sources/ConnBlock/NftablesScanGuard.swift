public import ConnCore

/// Kernel enforcement for `--block nftables`: a table beside conntrackr's (`inet conntrackr_guard`), whose chain
/// runs right after the block table's and holds a scanner to the threshold's worth of ports while the agent's block
/// is on its way.
///
/// The agent detects scans in user space, from a capture that cannot hold a packet back: by the time the block is
/// in the set, the victim's kernel has answered every SYN that arrived meanwhile (hundreds of ports for nmap -T4
/// on a busy 2-CPU host, where the capture thread waits for a CPU). The guard answers in the kernel instead:
/// - it remembers each (source, destination, port) the pair paid for, for the window plus a second (set
///   `guard_pairs4`/`6`), so a SYN to such a port passes and refreshes it;
/// - a SYN to any other port pays a token of the pair's bucket (set `guard_meter4`/`6`): `portThreshold`
///   tokens, refilled at `portThreshold` per window (nftables' `limit`, rounded to the faster side, with
///   ``refillMargin`` to spare);
/// - a SYN that cannot pay is dropped and its port not remembered, so resending it does not pass as known.
///
/// **It never drops what the rule does not call a scan.** A bucket of N tokens that gains at least N in any
/// window W holds at least N - k tokens, k being the SYNs that paid within the window ending now; so a SYN that
/// cannot pay comes after N paid ones within the window, each to a port of its own (a paid port is remembered
/// longer than the window), and its own port is none of them: N + 1 distinct ports in the window that ends at
/// that SYN, which is the rule's scan. Ports a pair reached on other interfaces, to other destinations, ignored
/// ports and allowlisted sources are not counted (the allow sets accept first). IPv6 sources count as single
/// addresses and destinations one by one, finer than `--ipv6-block-prefix` and `--destination-unit host`, which
/// only makes the guard more lenient (a scanner spreading over k addresses of one host gets k times N).
/// `NftablesScanGuardTests` checks this with a model of the kernel's arithmetic against
/// ``ConnCore/SlidingWindowScanDetector`` on random traffic.
///
/// Where it is weaker than the rule:
/// - SYNs of one pair to one new port, processed at the same instant on two CPUs, can each pay a token (the
///   lookup and the insertion are separate steps); a refused one that finds the port paid meanwhile passes.
/// - Fragmented SYNs (`nmap -f`) carry no TCP flags the chain can read and pass it; the agent reassembles them
///   and blocks at its own pace.
/// - A set that is full (``maxTrackedKeys``) lets SYNs pass uncounted; past the block budget, scanners pass.
/// - The interface is matched by name as netfilter sees it: under a bridge or a bond the guard sees nothing.
///
/// The block budget holds here as well: a pair the guard starts holding spends a token of one table-wide bucket
/// of `maxBlocksPerMinute` a minute (as large a burst, so up to twice that within any one minute); once that is
/// empty, further scanners pass the guard (as the XDP program lets them pass) and are left to the agent.
public struct NftablesScanGuard: Hashable, Sendable {
    /// The largest threshold the guard takes (nftables' burst is a 32-bit count; this keeps the rate's arithmetic
    /// far from overflow).
    public static let maxPortThreshold = ScanRule.maxPortThreshold

    /// More than this many distinct ports of one destination within ``window`` is a scan.
    public let portThreshold: Int
    public let window: Duration
    /// Ports that never count (the rule's ignored ports).
    public let ignoredPorts: PortSet
    /// The interface the agent captures on: SYNs arriving elsewhere are not the detector's, so not the guard's.
    public let interface: String
    /// Whether only SYNs to this host's own addresses count (the capture's filter without `--all-destinations`).
    public let localDestinationsOnly: Bool
    /// Pairs the guard may start holding per minute, table-wide.
    public let maxHeldPerMinute: Int
    /// The most keys each of the guard's sets holds (the rule's `maxTrackedPairs`); a SYN that would need one
    /// more passes the guard.
    public let maxTrackedKeys: Int

    /// The guard for `rule` on `interface`, or `nil` when nftables cannot express it: a threshold of 0 or above
    /// ``maxPortThreshold``, a window under a second, an interface name that is not a plain identifier, or a
    /// budget of no blocks (then nothing may be held).
    public init?(rule: ScanRule, interface: String, localDestinationsOnly: Bool, maxBlocksPerMinute: Int) {
        guard (1...Self.maxPortThreshold).contains(rule.portThreshold), rule.window >= .seconds(1),
            maxBlocksPerMinute >= 1, Self.isInterfaceName(interface)
        else { return nil }
        portThreshold = rule.portThreshold
        window = rule.window
        ignoredPorts = rule.ignoredPorts
        self.interface = interface
        self.localDestinationsOnly = localDestinationsOnly
        maxTrackedKeys = max(rule.maxTrackedPairs, 1)
        // nftables' burst is a 32-bit count; a budget this large holds every scanner anyway.
        maxHeldPerMinute = min(maxBlocksPerMinute, 1 << 20)
    }

    private static let weekNanoseconds: UInt64 = 604_800 * 1_000_000_000

    /// How much faster than the rule's own pace the bucket refills: the kernel's clock at the rule and the
    /// capture's timestamp of the same SYN differ by microseconds, which must never make the guard the stricter.
    static let refillMargin: Duration = .milliseconds(10)

    /// The bucket's refill in tokens per week, rounded up: nftables' `limit` refills one token per
    /// `week / rate` nanoseconds (integer division), which must not be longer than
    /// `(window - refillMargin) / portThreshold`.
    var tokensPerWeek: UInt64 {
        // window >= 1 s, so the difference stays positive.
        let window = UInt64(clamping: (self.window - Self.refillMargin).nanosecondsClamped)
        // portThreshold <= 1024 and a week is about 6.05e14 ns: the product stays below 6.2e17.
        let numerator = UInt64(portThreshold) * Self.weekNanoseconds
        return max(1, (numerator + window - 1) / window)
    }

    /// How long a pair's ports and bucket are kept: the window plus a second, so that a port is never forgotten
    /// before the rule forgets it (timeouts are kept in milliseconds).
    var keyTimeoutMilliseconds: Int64 { window.nanosecondsClamped / 1_000_000 + 1_000 }

    /// The guard's budget and sets, as declarations of its table.
    var declarations: [String] {
        // One budget for both families, shared through a named limit.
        let budget = "limit \(Self.budget) { rate \(maxHeldPerMinute)/minute burst \(maxHeldPerMinute) packets }"
        return [budget] + Self.families.flatMap { (family, _, address) in
            let dynamic = "flags dynamic, timeout; timeout \(keyTimeoutMilliseconds)ms; size \(maxTrackedKeys);"
            return [
                "set guard_pairs\(family) { type \(address) . \(address) . inet_service; \(dynamic) }",
                "set guard_meter\(family) { type \(address) . \(address); \(dynamic) }",
                "set guard_held\(family) { type \(address) . \(address); \(dynamic) }",
            ]
        }
    }

    /// The guard table's base-chain rule that sends SYNs (SYN set, ACK clear) arriving on the interface (on any,
    /// for a capture on libpcap's `any`) to the guard.
    var jump: String {
        let arriving = interface == "any" ? "" : "iifname \"\(interface)\" "
        return arriving + "tcp flags & (syn | ack) == syn jump \(Self.chain)"
    }

    /// The chain the guard table's base chain jumps to.
    static let chain = "scan_guard"
    /// Each address family's set and chain suffix, its header's name in rules, and its address type in sets.
    private static let families = [("4", "ip", "ipv4_addr"), ("6", "ip6", "ipv6_addr")]
    static let budget = "guard_budget"

    /// The guard's chains.
    var chains: [String] {
        var guardRules: [String] = []
        if !ignoredPorts.isEmpty {
            let ports = ignoredPorts.ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            guardRules.append("tcp dport { \(ports.joined(separator: ", ")) } return")
        }
        if localDestinationsOnly { guardRules.append("fib daddr type != local return") }
        var overChains: [String] = []
        for (family, ip, _) in Self.families {
            let pair = "\(ip) saddr . \(ip) daddr"
            let port = "\(pair) . tcp dport"
            let limit = "limit rate over \(tokensPerWeek)/week burst \(portThreshold) packets"
            let over = "\(Self.chain)_over\(family)"
            guardRules += [
                // A port the pair reached within the window: refresh it and pass.
                "\(port) @guard_pairs\(family) update @guard_pairs\(family) { \(port) } return",
                // A new port pays a token; one that cannot pay goes to the chain that drops.
                "meta nfproto ipv\(family) update @guard_meter\(family) { \(pair) \(limit) } jump \(over)",
                // Paid: remember the port. A refused port is never remembered, so resending it pays again.
                "meta nfproto ipv\(family) add @guard_pairs\(family) { \(port) }",
            ]
            overChains += [
                "    chain \(over) {",
                // Another CPU paid for this port meanwhile (SYNs of one pair to one port on two CPUs at once).
                "        \(port) @guard_pairs\(family) return",
                "        \(pair) @guard_held\(family) update @guard_held\(family) { \(pair) } counter drop",
                "        limit name \"\(Self.budget)\" add @guard_held\(family) { \(pair) } counter drop",
                "    }",
            ]
        }
        return ["    chain \(Self.chain) {"] + guardRules.map { "        " + $0 } + ["    }"] + overChains
    }

    /// Linux interface names the script can quote as they are: letters, digits and `.`, `_`, `-`, `@`.
    static func isInterfaceName(_ name: String) -> Bool {
        (1...15).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2E || byte == 0x5F || byte == 0x2D || byte == 0x40
            }
    }
}
