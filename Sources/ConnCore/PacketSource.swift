/// Where frames or connection attempts come from: a live capture or a capture file.
///
/// ``run(into:)`` blocks its thread and feeds the pipeline until the input ends or ``stop()`` is called from any
/// thread; it calls ``ConnectionPipeline/endOfBatch(now:)`` after each batch and at least every few hundred
/// milliseconds when idle, so that expiry and output keep moving.
public protocol PacketSource: AnyObject, Sendable {
    /// A short name for logs and metric labels, such as `pcap` or `xdp`.
    var name: String { get }

    /// Delivers everything captured to `pipeline` until the input ends or ``stop()`` is called.
    /// - Throws: ``ConntrackrError`` when capture cannot start or fails; what was delivered before stays delivered.
    func run(into pipeline: ConnectionPipeline) throws

    /// Asks a running ``run(into:)`` to return soon. Safe from any thread.
    func stop()
}
