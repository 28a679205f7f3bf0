/// A port scan: one source reaching more than the threshold of distinct ports on one destination within the window.
public struct PortScan: Hashable, Sendable {
    /// The time of the SYN that took the count over the threshold.
    public var time: Timestamp
    public var source: IPAddress
    public var destination: IPAddress
    /// The distinct destination ports reached within the window, ascending.
    public var ports: [UInt16]
    /// The earliest time, within the window, at which one of ``ports`` was last reached: where the scan began as
    /// far as the window shows. `nil` when the detector does not say. Not part of equality: it is what a detector
    /// knew of the scan, not the scan itself (the XDP program's reports and models of the rule leave it out).
    public var firstSeen: Timestamp?

    public static func == (lhs: PortScan, rhs: PortScan) -> Bool {
        lhs.time == rhs.time && lhs.source == rhs.source && lhs.destination == rhs.destination && lhs.ports == rhs.ports
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(time)
        hasher.combine(source)
        hasher.combine(destination)
        hasher.combine(ports)
    }

    public init(time: Timestamp, source: IPAddress, destination: IPAddress, ports: [UInt16], firstSeen: Timestamp? = nil) {
        self.time = time
        self.source = source
        self.destination = destination
        self.ports = ports
        self.firstSeen = firstSeen
    }
}

/// Decides, SYN by SYN, whether a source is scanning a destination.
///
/// A detector is owned by one pipeline and called from its capture thread only.
public protocol ScanDetector: AnyObject {
    /// Records one connection attempt (retransmissions included) and returns a scan the first time a pair
    /// crosses the threshold.
    func observe(_ attempt: ConnectionAttempt) -> PortScan?

    /// Pulls into cache the state that observing `attempts` will touch; must not change any state. Optional.
    func warm(_ attempts: UnsafeBufferPointer<ConnectionAttempt>)

    /// Forgets state that has aged out by `now`; called when the capture is idle.
    func expire(now: Timestamp)

    /// The (source, destination) pairs currently tracked.
    var trackedPairs: Int { get }

    /// Pairs evicted to stay within the detector's cap since it was made.
    var evictedPairs: Int { get }
}

extension ScanDetector {
    public func warm(_ attempts: UnsafeBufferPointer<ConnectionAttempt>) {}
}

/// Settings of the port-scan rule.
public struct ScanRule: Hashable, Sendable {
    /// A scan is more than this many distinct ports. Default 3.
    public var portThreshold: Int
    /// The window the ports must fall in. Default 60 seconds.
    public var window: Duration
    /// The most (source, destination) pairs tracked at once. Default 1,000,000.
    public var maxTrackedPairs: Int
    /// Destination ports that never count toward a scan: a SYN to one is still a new connection, but the detector
    /// does not see it, so it neither counts nor appears in a scan's ports (mail clients reaching 25, 465, 587,
    /// 993 and 995 of one server are not scanning it). Default none.
    ///
    /// - Important: The XDP program's in-kernel scan rule must skip the same ports, or the kernel and user space
    ///   disagree about who scans; ``PortSet/bitmap`` is the form its map takes (1,024 `u64`, port *p* at bit
    ///   `p % 64` of word `p / 64`).
    public var ignoredPorts: PortSet
    /// What the ports are counted per. Default ``DestinationUnit/address``.
    ///
    /// - Important: The XDP program's in-kernel scan rule must count by the same unit (its `one_destination`).
    public var destinationUnit: DestinationUnit

    /// The largest threshold accepted: per-pair state holds `portThreshold + 1` ports.
    public static let maxPortThreshold = 1024

    public init(
        portThreshold: Int = 3,
        window: Duration = .seconds(60),
        maxTrackedPairs: Int = 1_000_000,
        ignoredPorts: PortSet = PortSet(),
        destinationUnit: DestinationUnit = .address
    ) {
        self.portThreshold = portThreshold
        self.window = window
        self.maxTrackedPairs = maxTrackedPairs
        self.ignoredPorts = ignoredPorts
        self.destinationUnit = destinationUnit
    }
}

/// What a scan's ports are counted per.
public enum DestinationUnit: String, CaseIterable, Hashable, Sendable {
    /// Each destination address on its own: a scanner reaching 3 ports on each of a host's addresses stays under
    /// a threshold of 3.
    case address
    /// Every destination as one host: the ports a source reaches on any of the addresses seen count together.
    /// Meant for a live capture, which sees only this host's addresses (not with `--all-destinations`); a scan's
    /// reported destination is that of the SYN that took it over the threshold.
    case host
}
