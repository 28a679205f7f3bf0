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

    /// Whole seconds since the epoch (rounded towards negative infinity).
    public var seconds: Int64 {
        nanoseconds >= 0 ? nanoseconds / 1_000_000_000 : (nanoseconds - 999_999_999) / 1_000_000_000
    }

    /// The microseconds past ``seconds``.
    public var microsecondsOfSecond: Int64 { (nanoseconds - seconds * 1_000_000_000) / 1000 }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: Timestamp, rhs: Duration) -> Timestamp {
        Timestamp(nanoseconds: lhs.nanoseconds &+ rhs.nanosecondsClamped)
    }

    public static func - (lhs: Timestamp, rhs: Timestamp) -> Duration {
        .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds)
    }

    public var description: String {
        var buffer: [UInt8] = []
        var formatter = TimeFormatter()
        formatter.appendRFC3339(self, to: &buffer)
        return String(decoding: buffer, as: UTF8.self)
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
