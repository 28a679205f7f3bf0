import ConnCore
import ConnTesting
import Testing

/// `nmap -f` splits each SYN's TCP header into 8-byte IP fragments, so the flags are not in the first one; the host
/// reassembles and answers. The parser hands the pieces to the assembler, which reports the SYN.
@Suite struct FragmentedHeaderTests {
    static let attacker = address("198.51.100.56")
    static let attacker6 = address("2001:db8:bad::1")
    static let victim = address("203.0.113.5")
    static let victim6 = address("2001:db8:1::5")

    func classify(_ frame: [UInt8]) -> FrameVerdict {
        frame.withUnsafeBytes { FrameParser.classify($0, linkType: .ethernet) }
    }

    /// Feeds `frames` to a pipeline, `spacing` apart, and returns its events.
    func events(_ frames: [[UInt8]], spacing: Duration = .milliseconds(1)) -> [ConnEvent] {
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(events: sink)
        for (index, frame) in frames.enumerated() {
            frame.withUnsafeBytes {
                pipeline.process(frame: $0, linkType: .ethernet, time: referenceTime + spacing * index)
            }
        }
        pipeline.finish()
        return sink.events
    }

    @Test(arguments: [8, 16])
    func eachPieceOfAFragmentedHeaderIsAFragment(pieceSize: Int) {
        for source in [Self.attacker, Self.attacker6] {
            let destination = source.isIPv4 ? Self.victim : Self.victim6
            let pieces = FrameBuilder.fragmentedTCP(from: source, 40000, to: destination, 22, pieceSize: pieceSize)
            #expect(pieces.count == 20 / pieceSize + 1)
            for (index, piece) in pieces.enumerated() {
                let verdict = classify(piece)
                // Pieces past the first 16 bytes hold nothing that tells a SYN.
                if index * pieceSize < TCPHeaderFragment.headerBytes {
                    guard case .fragment(let fragment) = verdict else {
                        Issue.record("piece \(index) from \(source): \(verdict)")
                        continue
                    }
                    #expect(fragment.offset == index * pieceSize)
                    #expect(fragment.count == min(pieceSize, 16 - index * pieceSize))
                } else {
                    #expect(verdict == .other)
                }
            }
        }
    }

    /// FuzzFrameParser, `Regressions/FuzzFrameParser/fragment-cut-short`: a piece whose bytes the capture cut off
    /// was a fragment of no bytes, and the same frame with bytes appended a fragment of eight, so the verdict
    /// depended on bytes past the capture. A piece cut short is `truncated`, as any header cut short is (and the
    /// XDP program counts it malformed rather than dropping it).
    @Test func aPieceCutShortByTheCaptureIsTruncated() {
        let piece = FrameBuilder.fragmentedTCP(from: Self.attacker, 40000, to: Self.victim, 22)[1]
        #expect(classify(Array(piece.dropLast(3))) == .malformed(.truncated))
        guard case .fragment(let whole) = classify(piece) else {
            Issue.record("not a fragment")
            return
        }
        #expect(whole.count == 8)
        #expect(classify(piece + Array(repeating: 0, count: 64)) == .fragment(whole))
    }

    @Test func aFragmentedSYNIsReportedOnceWhicheverOrderThePiecesCome() {
        for source in [Self.attacker, Self.attacker6] {
            let destination = source.isIPv4 ? Self.victim : Self.victim6
            let pieces = FrameBuilder.fragmentedTCP(from: source, 40000, to: destination, 22)
            for order in [pieces, pieces.reversed()] {
                let found = events(order)
                #expect(found.count == 1, "\(source)")
                guard case .newConnection(let attempt) = found.first else { continue }
                #expect(attempt.source == source && attempt.destination == destination)
                #expect(attempt.sourcePort == 40000 && attempt.destinationPort == 22)
            }
        }
    }

    @Test func aFragmentedSegmentThatIsNoSYNIsNotReported() {
        let pieces = FrameBuilder.fragmentedTCP(from: Self.attacker, 40000, to: Self.victim, 22, flags: [.syn, .ack])
        #expect(events(pieces).isEmpty)
    }

    /// A real `nmap -sS -f` scan, as frames: each port's SYN in three fragments, identification per probe.
    @Test func aFragmentedScanIsDetected() {
        var frames: [[UInt8]] = []
        for port in UInt16(1)...10 {
            frames += FrameBuilder.fragmentedTCP(from: Self.attacker, 40000, to: Self.victim, port, identification: port)
        }
        let scans = events(frames).compactMap { event -> PortScan? in
            if case .portScan(let scan) = event { scan } else { nil }
        }
        #expect(scans.map(\.ports) == [[1, 2, 3, 4]])
    }

    @Test func theAssemblerIsBoundedAndForgets() {
        let assembler = FragmentedHeaderAssembler(capacity: 4, timeout: .seconds(30))
        // Ten packets whose second piece never comes: only the last four are kept.
        for identification in UInt16(1)...10 {
            let first = FrameBuilder.fragmentedTCP(from: Self.attacker, 1, to: Self.victim, 2, identification: identification)[0]
            guard case .fragment(let piece) = classify(first) else {
                Issue.record("not a fragment")
                return
            }
            #expect(assembler.add(piece, at: referenceTime) == nil)
        }
        #expect(assembler.count == 4)
        #expect(assembler.evicted == 6)
        // The second piece of a kept packet completes it; of a forgotten one, it does not.
        func second(_ identification: UInt16) -> TCPHeaderFragment? {
            let frame = FrameBuilder.fragmentedTCP(from: Self.attacker, 1, to: Self.victim, 2, identification: identification)[1]
            if case .fragment(let piece) = classify(frame) { return piece }
            return nil
        }
        #expect(assembler.add(second(10)!, at: referenceTime + .seconds(1)) != nil)
        #expect(assembler.add(second(1)!, at: referenceTime + .seconds(1)) == nil)
        // Past the timeout, what is left is forgotten.
        assembler.expire(now: referenceTime + .seconds(31))
        #expect(assembler.count == 0)
        #expect(assembler.add(second(9)!, at: referenceTime + .seconds(31)) == nil)
    }

    /// A packet started afresh under the same identification after its time was up is as old as its new start:
    /// not forgotten first in its old place, and not shielding older packets behind it from expiry.
    @Test func aPacketStartedAfreshAgesFromItsNewStart() {
        func piece(_ identification: UInt16, _ index: Int) -> TCPHeaderFragment? {
            let frame = FrameBuilder.fragmentedTCP(from: Self.attacker, 1, to: Self.victim, 2, identification: identification)[index]
            if case .fragment(let piece) = classify(frame) { return piece }
            return nil
        }
        let expiring = FragmentedHeaderAssembler(capacity: 8, timeout: .seconds(30))
        #expect(expiring.add(piece(1, 0)!, at: referenceTime) == nil)
        #expect(expiring.add(piece(2, 0)!, at: referenceTime + .seconds(10)) == nil)
        #expect(expiring.add(piece(1, 0)!, at: referenceTime + .seconds(31)) == nil)  // 1's time was up: afresh
        expiring.expire(now: referenceTime + .seconds(41))
        #expect(expiring.count == 1, "2 (from 10 s) has expired; 1 (from 31 s) has not")
        #expect(expiring.add(piece(1, 1)!, at: referenceTime + .seconds(42)) != nil)

        let full = FragmentedHeaderAssembler(capacity: 2, timeout: .seconds(30))
        #expect(full.add(piece(1, 0)!, at: referenceTime) == nil)
        #expect(full.add(piece(2, 0)!, at: referenceTime + .seconds(10)) == nil)
        #expect(full.add(piece(1, 0)!, at: referenceTime + .seconds(31)) == nil)
        #expect(full.add(piece(3, 0)!, at: referenceTime + .seconds(32)) == nil)  // room made: 2 is the oldest
        #expect(full.evicted == 1)
        #expect(full.add(piece(1, 1)!, at: referenceTime + .seconds(33)) != nil)
        #expect(full.add(piece(2, 1)!, at: referenceTime + .seconds(33)) == nil)
    }

    @Test func manyCompletedPacketsKeepTheAssemblerSmall() {
        let assembler = FragmentedHeaderAssembler(capacity: 8)
        var reported = 0
        for identification in 0..<UInt16(10_000) {
            for frame in FrameBuilder.fragmentedTCP(from: Self.attacker, 1, to: Self.victim, 2, identification: identification) {
                if case .fragment(let piece) = classify(frame), assembler.add(piece, at: referenceTime) != nil { reported += 1 }
            }
        }
        #expect(reported == 10_000)
        #expect(assembler.count == 0)
        #expect(assembler.evicted == 0)
    }
}
