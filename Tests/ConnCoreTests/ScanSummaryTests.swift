import ConnCore
import Foundation
import Testing

@Suite("Replay summary")
struct ScanSummaryTests {
    static let attacker = IPAddress("198.51.100.56")!
    static let attacker2 = IPAddress("198.51.100.57")!
    static let client = IPAddress("198.51.100.7")!
    static let victim = IPAddress("203.0.113.5")!
    static let start = Timestamp(seconds: 1_619_623_685)

    /// A pipeline whose events reach the summary and, filtered to port scans, a collector.
    func run(_ attempts: [ConnectionAttempt], maxRows: Int = 10_000) -> (ScanSummary, ConnectionPipeline, CollectingEventSink) {
        let summary = ScanSummary(maxRows: maxRows)
        let written = CollectingEventSink()
        let pipeline = ConnectionPipeline(
            events: BroadcastEventSink([summary, FilteringEventSink(kinds: [.portScan], wrapping: written)])
        )
        for attempt in attempts { pipeline.process(attempt) }
        pipeline.finish()
        return (summary, pipeline, written)
    }

    func syn(_ source: IPAddress, _ port: UInt16, at milliseconds: Int64, sourcePort: UInt16 = 40000) -> ConnectionAttempt {
        ConnectionAttempt(
            time: Self.start + .milliseconds(milliseconds), source: source, sourcePort: sourcePort,
            destination: Self.victim, destinationPort: port
        )
    }

    @Test("A scanner's row: its ports, first and last seen, SYNs, and the crossing SYN's time")
    func scannerRow() throws {
        var attempts = [syn(Self.client, 443, at: 0)]
        for port: UInt16 in 20...49 { attempts.append(syn(Self.attacker, port, at: Int64(port) * 10)) }
        attempts.append(syn(Self.attacker, 20, at: 600))  // a retransmission: not a new connection
        attempts.append(syn(Self.attacker, 20, at: 700, sourcePort: 40001))  // a new connection to a known port
        let (summary, _, written) = run(attempts)
        #expect(written.events.count == 1)  // events filtered; the summary saw them all
        #expect(summary.rows.count == 1)
        let row = try #require(summary.rows.first)
        #expect(row.source == Self.attacker)
        #expect(row.destination == Self.victim)
        #expect(row.ports.count == 30)
        #expect(row.ports.first(10) == Array(20...29))
        #expect(row.firstSeen == Self.start + .milliseconds(200))
        #expect(row.blockedAt == Self.start + .milliseconds(230))  // the 4th port, 23, crossed the rule of 3
        #expect(row.lastSeen == Self.start + .milliseconds(700))
        #expect(row.syns == 31)  // 4 in the detecting window, 26 more ports, one more connection to port 20
        #expect(row.detections == 1)
    }

    @Test("Rows are capped; detections beyond are counted")
    func capped() {
        var attempts: [ConnectionAttempt] = []
        for (index, source) in [Self.attacker, Self.attacker2, Self.client].enumerated() {
            for port: UInt16 in 1...4 { attempts.append(syn(source, port, at: Int64(index * 100) + Int64(port))) }
        }
        let (summary, _, _) = run(attempts, maxRows: 2)
        #expect(summary.rows.map(\.source) == [Self.attacker, Self.attacker2])
        #expect(summary.omittedDetections == 1)
    }

    @Test("A port tally counts exactly past its list, in the bitmap", arguments: [10, 256, 257, 1000, 65536])
    func tally(count: Int) {
        var tally = PortTally()
        for port in (0..<count).reversed() { tally.insert(UInt16(port)) }
        for port in 0..<min(count, 50) { tally.insert(UInt16(port)) }  // repeats change nothing
        #expect(tally.count == count)
        #expect(tally.first(10) == (0..<min(10, count)).map { UInt16($0) })
    }

    @Test("The JSON summary is one object of the documented shape; the text ends in totals")
    func rendering() throws {
        var attempts: [ConnectionAttempt] = []
        for port: UInt16 in 1...12 { attempts.append(syn(Self.attacker, port, at: Int64(port))) }
        let (summary, pipeline, _) = run(attempts)
        let totals = ReplayTotals(
            files: 3, failedFiles: 1, statistics: pipeline.statistics, malformed: [.truncated: 2]
        )
        var json = SummaryFormatter(format: .json)
        let line = json.render(summary, totals: totals)
        #expect(line.hasSuffix("}\n"))
        #expect(line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["kind"] as? String == "summary")
        #expect(object["files"] as? Int == 3)
        #expect(object["files_failed"] as? Int == 1)
        #expect(object["attempts"] as? Int == 12)
        #expect(object["new_connections"] as? Int == 12)
        #expect((object["malformed"] as? [String: Int])?["truncated"] == 2)
        #expect(object["scanners_omitted"] as? Int == 0)
        let scanners = try #require(object["scanners"] as? [[String: Any]])
        #expect(scanners.count == 1)
        #expect(scanners.first?["src"] as? String == "198.51.100.56")
        #expect(scanners.first?["ports"] as? Int == 12)
        #expect(scanners.first?["port_list"] as? [Int] == Array(1...10))
        #expect(scanners.first?["would_block_at"] as? String == "2021-04-28T15:28:05.004000Z")
        #expect(scanners.first?["first_seen"] as? String == "2021-04-28T15:28:05.001000Z")
        var text = SummaryFormatter(format: .text)
        let table = text.render(summary, totals: totals)
        #expect(table.contains("1,2,3,4,5,6,7,8,9,10,…"))
        // The attempts came without frames.
        #expect(table.contains("Totals: 3 files (1 failed), 0 frames, 12 attempts, 12 new connections, 1 port scan, 0 malformed frames"))
        #expect(table.contains("(truncated 2)"))
    }
}
