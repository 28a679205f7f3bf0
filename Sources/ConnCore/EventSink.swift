/// Receives the events a pipeline produces.
///
/// A sink is called from the pipeline's capture thread only; ``flush()`` marks the end of a batch of frames.
public protocol EventSink: AnyObject {
    func emit(_ event: ConnEvent)
    /// Pushes out what has been emitted so far.
    func flush()
}

/// Collects events in memory, for tests and for programs that embed the pipeline.
public final class CollectingEventSink: EventSink {
    public private(set) var events: [ConnEvent] = []

    public init() {}

    public func emit(_ event: ConnEvent) { events.append(event) }
    public func flush() {}

    /// Drops what has been collected.
    public func removeAll() { events.removeAll() }
}

/// Fans events out to several sinks, in order.
public final class BroadcastEventSink: EventSink {
    private let sinks: [any EventSink]

    public init(_ sinks: [any EventSink]) { self.sinks = sinks }

    public func emit(_ event: ConnEvent) { for sink in sinks { sink.emit(event) } }
    public func flush() { for sink in sinks { sink.flush() } }
}

/// Passes on only the events of chosen kinds: what a busy host writes (its scans and blocks, say, without a line
/// per connection). It filters output only; the pipeline counts every event for metrics before it gets here.
public final class FilteringEventSink: EventSink {
    /// The kinds passed on.
    public let kinds: Set<ConnEvent.Kind>
    private let sink: any EventSink
    /// One bit per kind (its index in `allCases`), so a check costs no hashing.
    private let mask: UInt8

    public init(kinds: Set<ConnEvent.Kind>, wrapping sink: any EventSink) {
        self.kinds = kinds
        self.sink = sink
        mask = kinds.reduce(0) { $0 | Self.bit($1) }
    }

    @inline(__always)
    private static func bit(_ kind: ConnEvent.Kind) -> UInt8 {
        switch kind {
        case .newConnection: 1
        case .portScan: 2
        case .blocked: 4
        case .unblocked: 8
        case .notBlocked: 16
        }
    }

    public func emit(_ event: ConnEvent) {
        if mask & Self.bit(event.kind) != 0 { sink.emit(event) }
    }

    public func flush() { sink.flush() }
}

extension FilteringEventSink {
    /// `sink` itself when `kinds` holds every kind (nothing to filter), else `sink` behind a filter.
    public static func wrapping(_ sink: any EventSink, kinds: Set<ConnEvent.Kind>) -> any EventSink {
        kinds.isSuperset(of: ConnEvent.Kind.allCases) ? sink : FilteringEventSink(kinds: kinds, wrapping: sink)
    }
}

@available(*, unavailable)
extension CollectingEventSink: Sendable {}

@available(*, unavailable)
extension FilteringEventSink: Sendable {}

@available(*, unavailable)
extension BroadcastEventSink: Sendable {}
