/// A new inbound connection attempt: a TCP segment with SYN set and ACK clear.
public struct ConnectionAttempt: Hashable, Sendable {
    /// When the segment was captured.
    public var time: Timestamp
    /// The address the SYN came from.
    public var source: IPAddress
    /// The address the SYN was sent to.
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(
        time: Timestamp,
        source: IPAddress,
        sourcePort: UInt16,
        destination: IPAddress,
        destinationPort: UInt16
    ) {
        self.time = time
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
    }
}
