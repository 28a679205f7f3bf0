@testable import ConnBlock
import ConnCore
import ConnTesting
import Testing

@Suite("nftables scan guard")
struct NftablesScanGuardTests {
    func makeGuard(
        threshold: Int = 3, window: Duration = .seconds(60), ignored: PortSet = PortSet(),
        interface: String = "eth0", local: Bool = true, budget: Int = 120
    ) -> NftablesScanGuard? {
        NftablesScanGuard(
            rule: ScanRule(portThreshold: threshold, window: window, ignoredPorts: ignored), interface: interface,
            localDestinationsOnly: local, maxBlocksPerMinute: budget
        )
    }

    @Test func theGuardHasATableOfItsOwnAfterTheBlockTable() throws {
        let runner = RecordingNftables()
        let guarded = try #require(makeGuard(ignored: PortSet([25...25, 465...465, 587...587])))
        try NftablesBlocker(.init(table: "ctr_test", scanGuard: guarded), commands: runner).createTable()
        let script = try #require(runner.scripts.first)
        let expected = """
            add element inet ctr_test allowed6 { ::1 }
            table inet ctr_test_guard
            delete table inet ctr_test_guard
            table inet ctr_test_guard {
                set allowed4 { type ipv4_addr; flags interval; auto-merge; }
                set allowed6 { type ipv6_addr; flags interval; auto-merge; }
                limit guard_budget { rate 120/minute burst 120 packets }
                set guard_pairs4 { type ipv4_addr . ipv4_addr . inet_service; flags dynamic, timeout; timeout 61000ms; size 1000000; }
                set guard_meter4 { type ipv4_addr . ipv4_addr; flags dynamic, timeout; timeout 61000ms; size 1000000; }
                set guard_held4 { type ipv4_addr . ipv4_addr; flags dynamic, timeout; timeout 61000ms; size 1000000; }
                set guard_pairs6 { type ipv6_addr . ipv6_addr . inet_service; flags dynamic, timeout; timeout 61000ms; size 1000000; }
                set guard_meter6 { type ipv6_addr . ipv6_addr; flags dynamic, timeout; timeout 61000ms; size 1000000; }
                set guard_held6 { type ipv6_addr . ipv6_addr; flags dynamic, timeout; timeout 61000ms; size 1000000; }
                chain prerouting {
                    type filter hook prerouting priority raw + 1; policy accept;
                    ip saddr @allowed4 accept
                    ip6 saddr @allowed6 accept
                    iifname "eth0" tcp flags & (syn | ack) == syn jump scan_guard
                }
                chain scan_guard {
                    tcp dport { 25, 465, 587 } return
                    fib daddr type != local return
                    ip saddr . ip daddr . tcp dport @guard_pairs4 update @guard_pairs4 { ip saddr . ip daddr . tcp dport } return
                    meta nfproto ipv4 update @guard_meter4 { ip saddr . ip daddr limit rate over 30246/week burst 3 packets } jump scan_guard_over4
                    meta nfproto ipv4 add @guard_pairs4 { ip saddr . ip daddr . tcp dport }
                    ip6 saddr . ip6 daddr . tcp dport @guard_pairs6 update @guard_pairs6 { ip6 saddr . ip6 daddr . tcp dport } return
                    meta nfproto ipv6 update @guard_meter6 { ip6 saddr . ip6 daddr limit rate over 30246/week burst 3 packets } jump scan_guard_over6
                    meta nfproto ipv6 add @guard_pairs6 { ip6 saddr . ip6 daddr . tcp dport }
                }
                chain scan_guard_over4 {
                    ip saddr . ip daddr . tcp dport @guard_pairs4 return
                    ip saddr . ip daddr @guard_held4 update @guard_held4 { ip saddr . ip daddr } counter drop
                    limit name "guard_budget" add @guard_held4 { ip saddr . ip daddr } counter drop
                }
                chain scan_guard_over6 {
                    ip6 saddr . ip6 daddr . tcp dport @guard_pairs6 return
                    ip6 saddr . ip6 daddr @guard_held6 update @guard_held6 { ip6 saddr . ip6 daddr } counter drop
                    limit name "guard_budget" add @guard_held6 { ip6 saddr . ip6 daddr } counter drop
                }
            }
            add element inet ctr_test_guard allowed4 { 127.0.0.0/8 }
            add element inet ctr_test_guard allowed6 { ::1 }

            """
        #expect(script.hasSuffix(expected), "\(script)")
        // The block table is the same as without a guard; the guard's allow sets change with the block table's.
        let plain = RecordingNftables()
        try NftablesBlocker(.init(table: "ctr_test"), commands: plain).createTable()
        let plainScript = try #require(plain.scripts.first)
        #expect(script.hasPrefix(plainScript), "\(plainScript)")
        try NftablesBlocker(.init(table: "ctr_test", scanGuard: guarded), commands: runner).replaceAllowlist(
            Allowlist([.init(prefix: prefix("203.0.113.5"), reason: .configured)])
        )
        #expect(
            runner.scripts.last == """
                flush set inet ctr_test allowed4
                flush set inet ctr_test allowed6
                add element inet ctr_test allowed4 { 127.0.0.0/8, 203.0.113.5 }
                add element inet ctr_test allowed6 { ::1 }
                flush set inet ctr_test_guard allowed4
                flush set inet ctr_test_guard allowed6
                add element inet ctr_test_guard allowed4 { 127.0.0.0/8, 203.0.113.5 }
                add element inet ctr_test_guard allowed6 { ::1 }

                """
        )
    }

    @Test func aCaptureOnAnyInterfaceIsGuardedOnAll() throws {
        #expect(try #require(makeGuard(interface: "any")).jump == "tcp flags & (syn | ack) == syn jump scan_guard")
        #expect(try #require(makeGuard(interface: "eth0")).jump.hasPrefix("iifname \"eth0\" "))
    }

    @Test func allDestinationsCountAndNoIgnoredPortsMeanNoReturns() throws {
        let chains = try #require(makeGuard(local: false)).chains.joined(separator: "\n")
        #expect(!chains.contains("fib daddr"))
        #expect(!chains.contains("tcp dport {"))
    }

    /// nftables refills one token every `week / rate` nanoseconds (integer division): never slower than the rule's
    /// `window / threshold`, and the rate is the least that achieves it.
    @Test(arguments: [1, 2, 3, 7, 32, 1024])
    func theRefillIsNeverSlowerThanTheRule(threshold: Int) throws {
        let week: UInt64 = 604_800_000_000_000
        for window in [Duration.seconds(1), .milliseconds(1_500), .seconds(7), .seconds(60), .seconds(86_400), .seconds(2 * 604_800)] {
            let guarded = try #require(makeGuard(threshold: threshold, window: window))
            let rate = guarded.tokensPerWeek
            let pace = UInt64((window - NftablesScanGuard.refillMargin).nanosecondsClamped)
            #expect((week / rate) * UInt64(threshold) <= pace, "threshold \(threshold), window \(window)")
            // One token a week fewer would be slower than the rule.
            if rate > 1 {
                #expect(Double(week) / Double(rate - 1) * Double(threshold) > Double(pace), "threshold \(threshold), window \(window)")
            }
        }
    }

    @Test func rulesNftablesCannotHoldGetNoGuard() {
        #expect(makeGuard(threshold: 0) == nil)
        #expect(makeGuard(threshold: ScanRule.maxPortThreshold + 1) == nil)
        #expect(makeGuard(window: .milliseconds(999)) == nil)
        #expect(makeGuard(budget: 0) == nil)
        for name in ["", "a b", "x\"y", "eth0;drop", String(repeating: "e", count: 16), "tab\tx"] {
            #expect(makeGuard(interface: name) == nil, "\(name)")
        }
        for name in ["eth0", "ens3.100", "veth-a_1", "wg@1", String(repeating: "e", count: 15)] {
            #expect(makeGuard(interface: name) != nil, "\(name)")
        }
    }

    // MARK: The guard never drops what the rule does not call a scan

    /// The kernel's side of the guard, step by step as nftables evaluates it on one CPU: the pair set with its
    /// timeout (refreshed on each known port), the per-pair bucket (`nft_limit`: tokens in nanoseconds, full when
    /// made, `week / rate` a token, nothing spent by a refused SYN), and only ports that paid remembered.
    struct KernelModel {
        let guarded: NftablesScanGuard
        var pairs: [String: Int64] = [:]  // "source>destination:port" → expiry
        var buckets: [String: Bucket] = [:]

        struct Bucket {
            var tokens: Int64
            var last: Int64
            var expiry: Int64
        }

        var cost: Int64 { Int64(604_800_000_000_000 / guarded.tokensPerWeek) }
        var timeout: Int64 { guarded.keyTimeoutMilliseconds * 1_000_000 }

        /// Whether the guard passes a SYN of `pair` to `port` at `now`.
        mutating func passes(pair: String, port: UInt16, now: Int64) -> Bool {
            let key = "\(pair):\(port)"
            if let expiry = pairs[key], now < expiry {
                pairs[key] = now + timeout
                return true
            }
            let maximum = cost * Int64(guarded.portThreshold)
            var bucket = buckets[pair].flatMap { now < $0.expiry ? $0 : nil } ?? Bucket(tokens: maximum, last: now, expiry: 0)
            let tokens = min(bucket.tokens + (now - bucket.last), maximum)
            bucket.last = now
            bucket.expiry = now + timeout
            let passes = tokens - cost >= 0
            bucket.tokens = passes ? tokens - cost : tokens
            buckets[pair] = bucket
            // Only a port that paid is remembered.
            if passes { pairs[key] = now + timeout }
            return passes
        }
    }

    /// Random SYNs over a few pairs and ports, at times that stand still, creep, or jump by about a window: every
    /// SYN the model drops belongs to a pair the detector has reported by then, and the rule's window that ends at
    /// that very SYN holds more than the threshold's worth of the pair's ports.
    @Test func theGuardDropsOnlyScannersAfterTheDetectorSawThem() throws {
        // Some sequences never crowd a window; together they must drop, or the check proved nothing.
        let drops = try (1...16 as ClosedRange<UInt64>).reduce(0) { $0 + (try Self.dropsChecked(seed: $1)) }
        #expect(drops > 100, "\(drops) drops in all")
    }

    /// One seeded sequence; returns how many SYNs the model dropped, each checked.
    static func dropsChecked(seed: UInt64) throws -> Int {
        var random = SplitMix64(seed: seed)
        let threshold = Int.random(in: 1...8, using: &random)
        let windowSeconds = Int64.random(in: 1...30, using: &random)
        let window = windowSeconds * 1_000_000_000
        let guarded = try #require(
            NftablesScanGuard(
                rule: ScanRule(portThreshold: threshold, window: .seconds(windowSeconds)), interface: "eth0",
                localDestinationsOnly: true, maxBlocksPerMinute: 120
            )
        )
        var model = KernelModel(guarded: guarded)
        let detector = SlidingWindowScanDetector(rule: ScanRule(portThreshold: threshold, window: .seconds(windowSeconds)))
        let sources = (1...3).map { IPAddress("198.51.100.\($0)")! }
        let destinations = [IPAddress("203.0.113.5")!, IPAddress("203.0.113.6")!]
        let portRange = UInt64(threshold + Int.random(in: 1...6, using: &random))
        var now = Int64.random(in: 1...1_000_000_000_000, using: &random)
        var reported: [String: Int64] = [:]
        // Each pair's SYNs within the window that ends at the latest one.
        var recent: [String: [(time: Int64, port: UInt16)]] = [:]
        var drops = 0
        for step in 0..<4_000 {
            switch random.next() % 10 {
            case 0: now += window - 1 + Int64(random.next() % 3)
            case 1: now += window * Int64(1 + random.next() % 2)
            case 2, 3: break
            // About the rule's pace (a port every window / threshold), where a bucket refilled any slower than
            // the rule would drop what the rule lets pass.
            case 4, 5, 6: now += window / Int64(threshold) - window / 100 + Int64(random.next() % UInt64(window / 50))
            default: now += Int64(random.next() % UInt64(window / Int64(4 * (threshold + 1)) + 1))
            }
            let busy = random.next() % 4 != 0
            let source = busy ? sources[0] : sources[Int(random.next() % UInt64(sources.count))]
            let destination = busy ? destinations[0] : destinations[Int(random.next() % UInt64(destinations.count))]
            let port = UInt16(1 + random.next() % portRange)
            let pair = "\(source)>\(destination)"
            var windowPair = recent[pair, default: []].filter { now - $0.time < window }
            windowPair.append((now, port))
            recent[pair] = windowPair
            if detector.observe(
                ConnectionAttempt(
                    time: Timestamp(nanoseconds: now), source: source, sourcePort: 40_000, destination: destination,
                    destinationPort: port
                )
            ) != nil {
                reported[pair] = now
            }
            if !model.passes(pair: pair, port: port, now: now) {
                drops += 1
                #expect(reported[pair] != nil, "seed \(seed), SYN \(step): \(pair) dropped, never reported")
                let ports = Set(windowPair.map(\.port))
                #expect(ports.count > threshold, "seed \(seed), SYN \(step): \(pair) dropped with \(ports.sorted()) in the window")
            }
        }
        return drops
    }

    /// A burst to new ports from a fresh pair passes exactly the threshold's worth, resending a refused port does
    /// not pass, a port already reached does; once the window has passed, the threshold's worth again.
    @Test(arguments: [1, 3, 5])
    func aBurstPassesTheThresholdsWorthAndNoMore(threshold: Int) throws {
        var model = KernelModel(guarded: try #require(makeGuard(threshold: threshold)))
        let start: Int64 = 1_000_000_000
        var passed: [Int] = []
        for port in 1...100 where model.passes(pair: "a>b", port: UInt16(port), now: start + Int64(port)) {
            passed.append(port)
        }
        #expect(passed == Array(1...threshold))
        let resent = model.passes(pair: "a>b", port: UInt16(threshold + 1), now: start + 200)
        #expect(!resent)
        let reached = model.passes(pair: "a>b", port: 1, now: start + 300)
        #expect(reached)
        let later = start + 61_000_000_000 + 1_000
        var again: [Int] = []
        for port in 101...200 where model.passes(pair: "a>b", port: UInt16(port), now: later + Int64(port)) {
            again.append(port)
        }
        #expect(again == Array(101...(100 + threshold)))
    }
}
