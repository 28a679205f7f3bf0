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
    /// What the XDP program's own scan rule decided at this SYN, when it enforces the rule in the kernel; `nil`
    /// for every SYN that changed nothing, and for attempts from other sources.
    public var kernelDecision: KernelDecision?

    public init(
        time: Timestamp,
        source: IPAddress,
        sourcePort: UInt16,
        destination: IPAddress,
        destinationPort: UInt16,
        kernelDecision: KernelDecision? = nil
    ) {
        self.time = time
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
        self.kernelDecision = kernelDecision
    }
}

/// A block decision the XDP program made itself, at the SYN that took a pair over the scan threshold (kernel
/// enforcement): the same rule and policy as ``BlockController``'s, applied before the SYN is answered.
public enum KernelDecision: UInt8, Hashable, Sendable {
    /// The source's unit is blocked, and this SYN was dropped.
    case blocked = 1
    case refusedAllowlisted = 2
    case refusedRateLimited = 3
    case refusedBlocklistFull = 4
    /// The program could not insert the block.
    case refusedFailed = 5
    /// A pair refused earlier for a limit that lifted: the program retried at this SYN and blocked.
    case blockedLater = 6
}
