#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in wall-clock time, in nanoseconds since the Unix epoch.
///
/// Live sources stamp frames with the capture time; replays use the file's own timestamps, so every
/// time-based rule (retransmits, scan windows, block expiry) behaves the same on both.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// A timestamp from whole seconds and a fraction in microseconds.
    public init(seconds: Int64, microseconds: Int64 = 0) {
        self.nanoseconds = seconds &* 1_000_000_000 &+ microseconds &* 1000
    }

    /// The current wall-clock time.
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    /// The times a capture record may carry, from the epoch to 2200-01-01T00:00:00Z: a record time outside is
    /// clamped to the nearer end (see ``init(clampingSeconds:nanosecondsPastSecond:)``).
    ///
    /// Narrower than `Int64` on purpose: what the pipeline does with a time (a minute before it, an expiry hours
    /// after it) then stays far from overflow, whatever a crafted file says.
    public static let recordTimeRange = Timestamp(nanoseconds: 0)...Timestamp(nanoseconds: 7_258_118_400_000_000_000)

    /// A capture record's time from whole seconds and nanoseconds past them, as libpcap reports them, clamped into
    /// ``recordTimeRange``. Never traps: a pcapng interface's `if_tsoffset` or a huge timestamp or resolution can
    /// put any value in either field.
    public init(clampingSeconds seconds: Int64, nanosecondsPastSecond fraction: Int64) {
        let range = Self.recordTimeRange
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (total, carry) = whole.addingReportingOverflow(fraction)
        if overflow {
            self = seconds < 0 ? range.lowerBound : range.upperBound
        } else if carry {
            self = fraction < 0 ? range.lowerBound : range.upperBound
        } else {
            self = min(max(Timestamp(nanoseconds: total), range.lowerBound), range.upperBound)
        }
    }

    /// Whole seconds since the epoch (rounded towards negative infinity).
    public var seconds: Int64 {
        // Quotient and remainder rather than an offset: that would overflow near `Int64.min`.
        let (quotient, remainder) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
        return remainder < 0 ? quotient - 1 : quotient
    }

    /// The microseconds past ``seconds``.
    public var microsecondsOfSecond: Int64 {
        let remainder = nanoseconds % 1_000_000_000
        return (remainder < 0 ? remainder + 1_000_000_000 : remainder) / 1000
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// `lhs` moved by `rhs`, saturating at `Int64`'s range: a time from outside (a fleet record, a kernel map)
    /// plus a long TTL must not wrap into the distant past.
    public static func + (lhs: Timestamp, rhs: Duration) -> Timestamp {
        Timestamp(nanoseconds: lhs.nanoseconds.saturatingAdding(rhs.nanosecondsClamped))
    }

    /// The time from `rhs` to `lhs`, saturating at `Int64`'s range of nanoseconds.
    public static func - (lhs: Timestamp, rhs: Timestamp) -> Duration {
        let (difference, overflow) = lhs.nanoseconds.subtractingReportingOverflow(rhs.nanoseconds)
        return .nanoseconds(overflow ? (lhs.nanoseconds < rhs.nanoseconds ? Int64.min : Int64.max) : difference)
    }

    public var description: String {
        var buffer: [UInt8] = []
        var formatter = TimeFormatter()
        formatter.appendRFC3339(self, to: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}

extension Int64 {
    /// `self + other`, saturating at `Int64.min` and `Int64.max` instead of trapping or wrapping.
    public func saturatingAdding(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other < 0 ? .min : .max
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64`'s range.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product &+ attoseconds / 1_000_000_000
    }
}
