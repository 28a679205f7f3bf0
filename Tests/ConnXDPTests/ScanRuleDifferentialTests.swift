import CScanRule
import ConnCore
import ConnTesting
import Testing

/// The scan rule has two implementations: the XDP program's (`bpf/scan_rule.h`, compiled here for the host) and
/// `SlidingWindowScanDetector`. Seeded random SYN sequences must get the same answer from both, SYN by SYN: the
/// same SYN takes a pair over the threshold, with the same ports.
@Suite("Scan rule: kernel and user space agree")
struct ScanRuleDifferentialTests {
    static let sources = (1...3).map { IPAddress("198.51.100.\($0)")! }
    static let destinations = [IPAddress("203.0.113.5")!, IPAddress("203.0.113.6")!]

    /// One sequence: `count` SYNs over a few pairs and few ports, at times that advance by nothing, by a little,
    /// or by about a window, so that retransmissions, window edges and quiet spells all occur.
    /// - Returns: the number of scans both reported.
    static func compare(seed: UInt64, count: Int) -> Int {
        var random = SplitMix64(seed: seed)
        let threshold = Int.random(in: 1...Int(CT_SCAN_MAX_THRESHOLD), using: &random)
        let window = Int64.random(in: 1...20, using: &random) * 1_000_000_000
        let portRange = UInt16(threshold + Int.random(in: 0...4, using: &random))
        let detector = SlidingWindowScanDetector(
            rule: ScanRule(portThreshold: threshold, window: .nanoseconds(window), maxTrackedPairs: 64)
        )
        var states: [String: ct_scan_state] = [:]
        var now = Int64.random(in: 1...1_000_000_000_000, using: &random)
        var scans = 0
        for step in 0..<count {
            switch random.next() % 10 {
            case 0: now += window - 1 + Int64(random.next() % 3)  // right at the window's edge
            case 1: now += window * Int64(1 + random.next() % 2)  // a quiet spell
            case 2, 3: break  // the same instant
            default: now += Int64(random.next() % UInt64(window / Int64(4 * (threshold + 1)) + 1))
            }
            // Most SYNs from one pair, so that it crosses the threshold; the others interleave.
            let busy = random.next() % 4 != 0
            let source = busy ? sources[0] : sources[Int(random.next() % UInt64(sources.count))]
            let destination = busy ? destinations[0] : destinations[Int(random.next() % UInt64(destinations.count))]
            let port = UInt16(1 + random.next() % UInt64(portRange))
            let attempt = ConnectionAttempt(
                time: Timestamp(nanoseconds: now), source: source, sourcePort: 40_000,
                destination: destination, destinationPort: port
            )
            let swift = detector.observe(attempt)
            let key = "\(source)>\(destination)"
            // As the program does: a pair not held yet is built with its first SYN, which never reports.
            var state = ct_scan_state()
            var kernel = false
            if let held = states[key] {
                state = held
                kernel = ct_scan_observe_host(&state, port, now, UInt32(threshold), window) == 1
            } else {
                ct_scan_first_host(&state, port, now)
            }
            states[key] = state
            let kernelPorts = kernel ? portsHeld(state, at: now, window: window) : []
            #expect(
                (swift != nil) == kernel && (swift?.ports ?? []) == kernelPorts,
                "seed \(seed), SYN \(step) (\(key) port \(port) at \(now)): Swift \(swift?.ports ?? []), kernel \(kernel) \(kernelPorts)"
            )
            // The program's map holds only the slots the threshold uses: the rule must never touch another.
            let unused = slots(of: state).dropFirst(Int(ct_scan_slots_used(UInt32(threshold))))
            #expect(
                unused.allSatisfy { $0.time == 0 && $0.port == 0 },
                "seed \(seed), SYN \(step): a slot past the threshold's was used"
            )
            if (swift != nil) != kernel { return scans }
            if kernel { scans += 1 }
        }
        return scans
    }

    /// All of a state's slots, the unused ones included.
    static func slots(of state: ct_scan_state) -> [ct_scan_slot] {
        withUnsafeBytes(of: state.slots) { Array($0.bindMemory(to: ct_scan_slot.self)) }
    }

    /// The ports a state holds within the window ending at `now`, ascending.
    static func portsHeld(_ state: ct_scan_state, at now: Int64, window: Int64) -> [UInt16] {
        slots(of: state).filter { $0.time != 0 && now &- $0.time < window }.map(\.port).sorted()
    }

    @Test("Seeded random sequences", arguments: 0..<200)
    func randomSequences(run: Int) {
        _ = Self.compare(seed: 0x5CA7_0000 &+ UInt64(run), count: 400)
    }

    @Test("The sequences are not trivial: scans are found")
    func sequencesFindScans() {
        let scans = (0..<20).map { Self.compare(seed: 0xF00D_0000 &+ UInt64($0), count: 400) }.reduce(0, +)
        #expect(scans > 5)
    }

    @Test("A new pair built by ct_scan_first is the state ct_scan_observe makes of its first SYN", arguments: 0..<8)
    func firstSYNShortcut(run: Int) {
        var random = SplitMix64(seed: 0xF125_7000 &+ UInt64(run))
        // Times from the clock's first instants (where last_seen stays 0 or moves) to ones far past any window.
        let times: [Int64] = [.min, -1, 0, 1, 2] + (0..<40).map { _ in Int64.random(in: 1...Int64.max, using: &random) }
        for threshold in 1...Int(CT_SCAN_MAX_THRESHOLD) {
            for now in times {
                let port = UInt16.random(in: .min ... .max, using: &random)
                let window = Int64.random(in: 1...120, using: &random) * 1_000_000_000
                var observed = ct_scan_state()
                let reported = ct_scan_observe_host(&observed, port, now, UInt32(threshold), window)
                var built = ct_scan_state()
                ct_scan_first_host(&built, port, now)
                let same = withUnsafeBytes(of: observed) { a in withUnsafeBytes(of: built) { b in a.elementsEqual(b) } }
                #expect(reported == 0 && same, "threshold \(threshold), port \(port), now \(now), window \(window)")
            }
        }
    }

    @Test("The window is (t - W, t]: a port reached exactly one window ago no longer counts")
    func windowEdge() {
        var state = ct_scan_state()
        let window: Int64 = 60_000_000_000
        for (index, port) in [UInt16(1), 2, 3].enumerated() {
            #expect(ct_scan_observe_host(&state, port, 1_000 + Int64(index), 3, window) == 0)
        }
        // Port 1 was reached at 1000: at 1000 + W it has left the window, so this is the third port, not the fourth.
        #expect(ct_scan_observe_host(&state, 4, 1_000 + window, 3, window) == 0)
        #expect(ct_scan_observe_host(&state, 5, 1_000 + window, 3, window) == 1)
    }
}
