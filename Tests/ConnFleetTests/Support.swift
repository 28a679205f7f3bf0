import ConnCore
import ConnFleet
import ConnTesting
import Synchronization

/// Collects the events a fleet service hands out.
final class EventCollector: Sendable {
    private let events = Mutex<[ConnEvent]>([])

    var all: [ConnEvent] { events.withLock { $0 } }

    func post(_ new: [ConnEvent]) {
        events.withLock { $0 += new }
    }

    var blocked: [BlockEntry] {
        all.compactMap { if case .blocked(let entry, _) = $0 { entry } else { nil } }
    }

    var unblocked: [(IPPrefix, UnblockReason)] {
        all.compactMap { if case .unblocked(let prefix, let reason, _) = $0 { (prefix, reason) } else { nil } }
    }

    var notBlocked: [(IPAddress, String)] {
        all.compactMap { if case .notBlocked(let address, let reason, _) = $0 { (address, reason.description) } else { nil } }
    }
}

/// A clock tests can move.
final class TestClock: Sendable {
    private let current: Mutex<Timestamp>

    init(_ start: Timestamp = Timestamp.now()) { current = Mutex(start) }

    var now: Timestamp { current.withLock { $0 } }

    func advance(by duration: Duration) {
        current.withLock { $0 = $0 + duration }
    }
}

/// Waits until `condition` holds, checking every 10 ms; `false` if it still does not after `timeout`.
///
/// The default is generous because every test target shares one process: suites that block their threads (sleeps
/// in synchronous kernel tests) can starve the concurrency pool for seconds. Passing tests return at once.
func eventually(
    within timeout: Duration = .seconds(120),
    _ condition: () throws -> Bool
) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try condition()
}

/// Runs `services` while `body` runs, then cancels them and waits for them to stop.
func whileRunning<T: Sendable>(
    _ services: [FleetService],
    _ body: () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for service in services {
            group.addTask { try await service.run() }
        }
        do {
            let result = try await body()
            group.cancelAll()
            try await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            try? await group.waitForAll()
            throw error
        }
    }
}

let scanner = IPAddress("198.51.100.66")!
let victim = IPAddress("203.0.113.10")!

func scan(from source: IPAddress = scanner, at time: Timestamp = Timestamp.now()) -> PortScan {
    PortScan(time: time, source: source, destination: victim, ports: [22, 80, 443, 8080])
}

func record(
    _ prefix: String,
    host: String = "other",
    since: Timestamp = Timestamp.now(),
    ttl: Duration? = .seconds(600)
) -> FleetRecord {
    FleetRecord(
        prefix: IPPrefix(prefix)!,
        host: host,
        reason: .portScan,
        ports: [22, 80, 443, 8080],
        since: since,
        expires: ttl.map { since + $0 }
    )
}
