import ConnCapture
import ConnCore
import Foundation
import Testing

/// Replays the captures recorded in the namespace lab (`Tests/e2e/record-captures.sh`) and compares the events with
/// `expected.json`, which the recording script computed independently from tcpdump's view of each file.
@Suite("Replay of real lab captures")
struct RealCaptureTests {
    struct Expected: Decodable {
        struct File: Decodable {
            var frames: Int
            var new_connections: Int
            var port_scans: Int
            var pairs: [Pair]
        }
        struct Pair: Decodable {
            var src: String
            var dst: String
            var new_connections: Int
            var port_scan: [UInt16]?
        }
        var files: [String: File]
    }

    static let directory = Bundle.module.url(forResource: "Captures", withExtension: nil)!
    static let expected: Expected = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()

    @Test("Every lab capture replays to exactly the expected events", arguments: expected.files.keys.sorted())
    func replay(name: String) throws {
        let file = try #require(Self.expected.files[name])
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(events: sink)
        try PcapFileSource(path: Self.directory.appendingPathComponent(name).path).run(into: pipeline)
        #expect(pipeline.statistics.frames == file.frames)
        #expect(pipeline.statistics.malformedFrames == 0)
        let connections = sink.events.compactMap { if case .newConnection(let attempt) = $0 { attempt } else { nil } }
        let scans = sink.events.compactMap { if case .portScan(let scan) = $0 { scan } else { nil } }
        #expect(connections.count == file.new_connections)
        #expect(scans.count == file.port_scans)
        for pair in file.pairs {
            let source = try #require(IPAddress(pair.src))
            let destination = try #require(IPAddress(pair.dst))
            let pairConnections = connections.filter { $0.source == source && $0.destination == destination }
            #expect(pairConnections.count == pair.new_connections, "\(pair.src) -> \(pair.dst)")
            let pairScans = scans.filter { $0.source == source && $0.destination == destination }
            #expect(pairScans.map(\.ports) == (pair.port_scan.map { [$0] } ?? []), "\(pair.src) -> \(pair.dst)")
        }
    }
}
