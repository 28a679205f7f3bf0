import ConnBlock
import ConnCore
import Foundation
import Synchronization

/// The path of a committed fixture file.
func fixturePath(_ name: String) -> String {
    guard let directory = Bundle.module.path(forResource: "Fixtures", ofType: nil) else {
        fatalError("the Fixtures resource directory is missing from the test bundle")
    }
    return directory + "/" + name
}

func fixtureBytes(_ name: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: fixturePath(name))))
}

func address(_ text: String) -> IPAddress {
    guard let address = IPAddress(text) else { fatalError("bad test address \(text)") }
    return address
}

func prefix(_ text: String) -> IPPrefix {
    guard let prefix = IPPrefix(text) else { fatalError("bad test prefix \(text)") }
    return prefix
}

/// 2021-04-28 15:28:11 UTC, the brief's example time.
let referenceTime = Timestamp(seconds: 1_619_623_691)

/// A metrics sink that counts, so tests can check what was reported.
final class CountingMetricsSink: MetricsSink {
    private let counts = Mutex<[CounterMetric: Int]>([:])
    private let gauges = Mutex<[GaugeMetric: Int]>([:])

    func increment(_ counter: CounterMetric, by amount: Int) {
        counts.withLock { $0[counter, default: 0] += amount }
    }

    func set(_ gauge: GaugeMetric, to value: Int) {
        gauges.withLock { $0[gauge] = value }
    }

    subscript(_ counter: CounterMetric) -> Int { counts.withLock { $0[counter, default: 0] } }

    var total: Int { counts.withLock { $0.values.reduce(0, +) } }
}

/// Runs a command to completion for the lab helpers, failing loudly when it fails.
@discardableResult
func shell(_ arguments: [String], input: String = "", timeout: Duration = .seconds(10)) throws -> String {
    let result = try SpawnCommandRunner().run(arguments, input: Array(input.utf8), timeout: timeout)
    guard result.status == 0 else {
        throw LabError(
            "\(arguments.joined(separator: " ")) exited with \(result.status): "
                + String(decoding: result.standardError, as: UTF8.self)
        )
    }
    return String(decoding: result.standardOutput, as: UTF8.self)
}

struct LabError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A suffix that keeps this run's namespaces, links and tables apart from any other run's.
func runSuffix() -> String {
    String(UInt32.random(in: 0...UInt32.max), radix: 16)
}
