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

@available(*, unavailable)
extension CollectingEventSink: Sendable {}

@available(*, unavailable)
extension BroadcastEventSink: Sendable {}
