import ConnCore
import ConnMetrics
import Testing

@Suite("Prometheus metrics sink")
struct PrometheusMetricsSinkTests {
    /// Issue 4's names and types; labelled families with every label value that must exist from the start.
    static let families: [(name: String, type: String, labels: [[String: String]])] = [
        ("conntrackr_new_connections_total", "counter", [[:]]),
        ("conntrackr_port_scans_total", "counter", [[:]]),
        ("conntrackr_blocks_total", "counter", [["origin": "local"], ["origin": "fleet"]]),
        ("conntrackr_unblocks_total", "counter", [["reason": "expired"], ["reason": "removed"]]),
        (
            "conntrackr_blocks_refused_total", "counter",
            [
                ["reason": "allowlisted"], ["reason": "blocklist_full"], ["reason": "rate_limited"],
                ["reason": "error"],
            ]
        ),
        ("conntrackr_blocked_sources", "gauge", [[:]]),
        ("conntrackr_blocked_packets_total", "counter", [[:]]),
        ("conntrackr_capture_dropped_total", "counter", [["source": "pcap"], ["source": "xdp_ringbuf"]]),
        (
            "conntrackr_malformed_frames_total", "counter",
            MalformedReason.allCases.map { ["reason": $0.rawValue] }
        ),
        ("conntrackr_tracked_pairs", "gauge", [[:]]),
        ("conntrackr_tracked_pairs_evicted_total", "counter", [[:]]),
        ("conntrackr_tracked_connections", "gauge", [[:]]),
        ("conntrackr_tracked_connections_evicted_total", "counter", [[:]]),
        ("conntrackr_events_dropped_total", "counter", [[:]]),
        ("conntrackr_frames_total", "counter", [[:]]),
        // Issue 12: kernel enforcement.
        ("conntrackr_scan_rule_disagreements_total", "counter", [[:]]),
        ("conntrackr_kernel_scan_pairs_inserted_total", "counter", [[:]]),
        ("conntrackr_tiny_fragments_dropped_total", "counter", [[:]]),
        ("conntrackr_long_header_chains_dropped_total", "counter", [[:]]),
        ("conntrackr_capture_running", "gauge", [[:]]),
        ("conntrackr_fleet_connected", "gauge", [[:]]),
        ("conntrackr_fleet_publications_total", "counter", [[:]]),
        ("conntrackr_fleet_publications_dropped_total", "counter", [[:]]),
        (
            "conntrackr_fleet_refused_total", "counter",
            FleetRefusalReason.allCases.map { ["reason": $0.rawValue] }
        ),
    ]

    @Test func everyFamilyHasItsTypeAndHelpAndStartsAtZero() throws {
        let exposition = try Exposition(PrometheusMetricsSink(version: "1.2.3").expositionText())
        for family in Self.families {
            #expect(exposition.types[family.name] == family.type, "\(family.name)")
            let help = try #require(exposition.help[family.name], "\(family.name) has no HELP line")
            #expect(help.count > 10, "\(family.name)")
            #expect(exposition.series(family.name).count == family.labels.count, "\(family.name)")
            for labels in family.labels {
                #expect(exposition.value(family.name, labels) == 0, "\(family.name)\(labels)")
            }
        }
        #expect(exposition.types["conntrackr_build_info"] == "gauge")
        #expect(exposition.help["conntrackr_build_info"] != nil)
        #expect(exposition.value("conntrackr_build_info", ["version": "1.2.3"]) == 1)
        // Nothing but the listed families: no stray series per address or per anything else.
        #expect(Set(exposition.types.keys) == Set(Self.families.map(\.name) + ["conntrackr_build_info"]))
    }

    static let counterCases: [(CounterMetric, String, [String: String])] = [
        (.newConnections, "conntrackr_new_connections_total", [:]),
        (.portScans, "conntrackr_port_scans_total", [:]),
        (.blocks(.local), "conntrackr_blocks_total", ["origin": "local"]),
        (.blocks(.fleet), "conntrackr_blocks_total", ["origin": "fleet"]),
        (.unblocks(.expired), "conntrackr_unblocks_total", ["reason": "expired"]),
        (.unblocks(.removed), "conntrackr_unblocks_total", ["reason": "removed"]),
        (.blocksRefused(.rateLimited), "conntrackr_blocks_refused_total", ["reason": "rate_limited"]),
        (.malformedFrames(.truncated), "conntrackr_malformed_frames_total", ["reason": "truncated"]),
        (.malformedFrames(.invalidHeader), "conntrackr_malformed_frames_total", ["reason": "invalid_header"]),
        (.captureDropped(.pcap), "conntrackr_capture_dropped_total", ["source": "pcap"]),
        (.captureDropped(.xdpRingBuffer), "conntrackr_capture_dropped_total", ["source": "xdp_ringbuf"]),
        (.trackedPairsEvicted, "conntrackr_tracked_pairs_evicted_total", [:]),
        (.trackedConnectionsEvicted, "conntrackr_tracked_connections_evicted_total", [:]),
        (.eventsDropped, "conntrackr_events_dropped_total", [:]),
        (.framesProcessed, "conntrackr_frames_total", [:]),
        (.fleetPublications, "conntrackr_fleet_publications_total", [:]),
        (.fleetPublicationsDropped, "conntrackr_fleet_publications_dropped_total", [:]),
        (.fleetRefused(.tooWide), "conntrackr_fleet_refused_total", ["reason": "too_wide"]),
        (.fleetRefused(.rateLimited), "conntrackr_fleet_refused_total", ["reason": "rate_limited"]),
    ]

    @Test(arguments: counterCases)
    func incrementMovesOnlyItsOwnSeries(counter: CounterMetric, name: String, labels: [String: String]) throws {
        let sink = PrometheusMetricsSink(version: "test")
        sink.increment(counter, by: 3)
        sink.increment(counter, by: 4)
        let exposition = try Exposition(sink.expositionText())
        #expect(exposition.value(name, labels) == 7)
        let others = exposition.samples.filter { !($0.name == name && $0.labels == labels) }
        #expect(others.allSatisfy { $0.value == 0 || $0.name == "conntrackr_build_info" })
    }

    static let gaugeCases: [(GaugeMetric, String)] = [
        (.trackedPairs, "conntrackr_tracked_pairs"),
        (.trackedConnections, "conntrackr_tracked_connections"),
        (.blockedSources, "conntrackr_blocked_sources"),
        (.captureRunning, "conntrackr_capture_running"),
        (.fleetConnected, "conntrackr_fleet_connected"),
    ]

    @Test(arguments: gaugeCases)
    func setReplacesTheGaugeValue(gauge: GaugeMetric, name: String) throws {
        let sink = PrometheusMetricsSink(version: "test")
        sink.set(gauge, to: 12)
        sink.set(gauge, to: 5)
        #expect(try Exposition(sink.expositionText()).value(name) == 5)
        sink.set(gauge, to: 0)
        #expect(try Exposition(sink.expositionText()).value(name) == 0)
    }

    @Test func zeroAndNegativeIncrementsAreIgnored() throws {
        let sink = PrometheusMetricsSink(version: "test")
        sink.increment(.newConnections, by: 2)
        sink.increment(.newConnections, by: 0)
        sink.increment(.newConnections, by: -5)
        #expect(try Exposition(sink.expositionText()).value("conntrackr_new_connections_total") == 2)
    }

    @Test func captureRunningIsRemembered() {
        let sink = PrometheusMetricsSink(version: "test")
        #expect(!sink.isCaptureRunning)
        sink.set(.captureRunning, to: 1)
        #expect(sink.isCaptureRunning)
        sink.set(.captureRunning, to: 0)
        #expect(!sink.isCaptureRunning)
    }

    /// Labels are typed: every value exists from the first scrape, and no caller can invent another.
    @Test func everyLabelValueHasItsSeriesFromTheStart() throws {
        let exposition = try Exposition(PrometheusMetricsSink(version: "test").expositionText())
        let refused = exposition.series("conntrackr_blocks_refused_total")
        #expect(Set(refused.compactMap { $0.labels["reason"] }) == Set(BlockRefusal.Kind.allCases.map(\.rawValue)))
        #expect(Set(refused.compactMap { $0.labels["reason"] }) == ["allowlisted", "rate_limited", "blocklist_full", "error"])
        let dropped = exposition.series("conntrackr_capture_dropped_total")
        #expect(Set(dropped.compactMap { $0.labels["source"] }) == ["pcap", "xdp_ringbuf"])
        #expect((refused + dropped).allSatisfy { $0.value == 0 })
    }

    @Test func twoSinksCanShareARegistry() throws {
        let first = PrometheusMetricsSink(version: "a")
        let second = PrometheusMetricsSink(version: "a", registry: first.registry)
        first.increment(.portScans, by: 1)
        second.increment(.portScans, by: 1)
        #expect(try Exposition(first.expositionText()).value("conntrackr_port_scans_total") == 2)
    }
}

@Suite("Scrape hooks")
struct ScrapeHookTests {
    @Test func kernelTotalsAdvanceCountersByTheirGrowth() throws {
        let sink = PrometheusMetricsSink(version: "test")
        let kernel = KernelValues()
        sink.addScrapeHook(name: "fake xdp") { scrape in
            let values = kernel.read()
            scrape.setTotal(.framesProcessed, to: values.frames)
            scrape.setTotal(.captureDropped(.xdpRingBuffer), to: values.lost)
            scrape.setBlockedPacketsTotal(values.dropped)
            scrape.set(.blockedSources, to: values.entries)
        }
        kernel.write(frames: 10, lost: 1, dropped: 100, entries: 3)
        var exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_frames_total") == 10)
        #expect(exposition.value("conntrackr_capture_dropped_total", ["source": "xdp_ringbuf"]) == 1)
        #expect(exposition.value("conntrackr_blocked_packets_total") == 100)
        #expect(exposition.value("conntrackr_blocked_sources") == 3)

        // The pipeline's own increments add to the same counter without being overwritten.
        sink.increment(.framesProcessed, by: 5)
        kernel.write(frames: 25, lost: 1, dropped: 150, entries: 2)
        exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_frames_total") == 30)
        #expect(exposition.value("conntrackr_blocked_packets_total") == 150)
        #expect(exposition.value("conntrackr_blocked_sources") == 2)

        // The kernel's counters restarted (program reloaded): the new total counts in full, never backwards.
        kernel.write(frames: 4, lost: 0, dropped: 7, entries: 2)
        exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_frames_total") == 34)
        #expect(exposition.value("conntrackr_blocked_packets_total") == 157)
        #expect(exposition.value("conntrackr_capture_dropped_total", ["source": "xdp_ringbuf"]) == 1)
    }

    @Test func everyScrapeRunsEveryHookInOrder() throws {
        let sink = PrometheusMetricsSink(version: "test")
        let calls = CallLog()
        sink.addScrapeHook(name: "first") { _ in calls.append("first") }
        sink.addScrapeHook(name: "second") { _ in calls.append("second") }
        _ = sink.exposition()
        _ = sink.exposition()
        #expect(calls.entries == ["first", "second", "first", "second"])
    }

    @Test func aFailingHookKeepsItsLastValuesAndDoesNotStopTheOthers() throws {
        struct MapGone: Error {}
        let sink = PrometheusMetricsSink(version: "test")
        let kernel = KernelValues()
        let failing = CallLog()
        sink.addScrapeHook(name: "blocklist") { scrape in
            if !failing.entries.isEmpty { throw MapGone() }
            scrape.set(.blockedSources, to: kernel.read().entries)
        }
        sink.addScrapeHook(name: "statistics") { scrape in scrape.setBlockedPacketsTotal(kernel.read().dropped) }
        kernel.write(frames: 0, lost: 0, dropped: 9, entries: 4)
        _ = sink.exposition()
        failing.append("now")
        kernel.write(frames: 0, lost: 0, dropped: 11, entries: 8)
        let exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_blocked_sources") == 4)
        #expect(exposition.value("conntrackr_blocked_packets_total") == 11)
    }
}

/// Stands in for values read from BPF maps.
private final class KernelValues: Sendable {
    struct Values { var frames: UInt64 = 0, lost: UInt64 = 0, dropped: UInt64 = 0, entries = 0 }
    private let values = LockedBox(Values())

    func write(frames: UInt64, lost: UInt64, dropped: UInt64, entries: Int) {
        values.set(Values(frames: frames, lost: lost, dropped: dropped, entries: entries))
    }

    func read() -> Values { values.get() }
}

private final class CallLog: Sendable {
    private let box = LockedBox([String]())
    func append(_ entry: String) { box.mutate { $0.append(entry) } }
    var entries: [String] { box.get() }
}
