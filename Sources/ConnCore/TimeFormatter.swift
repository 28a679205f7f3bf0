#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Formats timestamps for event lines, caching the calendar fields of the last second seen.
///
/// Events arrive in bursts within the same second, so the `localtime_r`/`gmtime_r` call is paid once per second
/// rather than once per event.
public struct TimeFormatter: Sendable {
    private var localSecond: Int64 = .min
    private var localText: [UInt8] = []
    private var utcSecond: Int64 = .min
    private var utcText: [UInt8] = []

    public init() {
        tzset()
    }

    /// Appends `YYYY-MM-DD HH:MM:SS` in the local time zone (honouring `TZ`).
    public mutating func appendLocal(_ time: Timestamp, to buffer: inout [UInt8]) {
        let second = time.seconds
        if second != localSecond {
            var clock = time_t(second)
            var fields = tm()
            localtime_r(&clock, &fields)
            localText = Self.calendarText(fields, separator: UInt8(ascii: " "))
            localSecond = second
        }
        buffer.append(contentsOf: localText)
    }

    /// Appends `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
    public mutating func appendRFC3339(_ time: Timestamp, to buffer: inout [UInt8]) {
        let second = time.seconds
        if second != utcSecond {
            var clock = time_t(second)
            var fields = tm()
            gmtime_r(&clock, &fields)
            utcText = Self.calendarText(fields, separator: UInt8(ascii: "T"))
            utcSecond = second
        }
        buffer.append(contentsOf: utcText)
        buffer.append(UInt8(ascii: "."))
        appendPadded(Int(time.microsecondsOfSecond), width: 6, to: &buffer)
        buffer.append(UInt8(ascii: "Z"))
    }

    private static func calendarText(_ fields: tm, separator: UInt8) -> [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(19)
        appendPadded(Int(fields.tm_year) + 1900, width: 4, to: &text)
        text.append(UInt8(ascii: "-"))
        appendPadded(Int(fields.tm_mon) + 1, width: 2, to: &text)
        text.append(UInt8(ascii: "-"))
        appendPadded(Int(fields.tm_mday), width: 2, to: &text)
        text.append(separator)
        appendPadded(Int(fields.tm_hour), width: 2, to: &text)
        text.append(UInt8(ascii: ":"))
        appendPadded(Int(fields.tm_min), width: 2, to: &text)
        text.append(UInt8(ascii: ":"))
        appendPadded(Int(fields.tm_sec), width: 2, to: &text)
        return text
    }
}

@inline(__always)
func appendPadded(_ value: Int, width: Int, to buffer: inout [UInt8]) {
    var digits = width
    var divisor = 1
    while digits > 1 { divisor *= 10; digits -= 1 }
    var remaining = max(0, value)
    if remaining >= divisor * 10 {  // wider than asked: print it whole
        appendDecimal(UInt32(truncatingIfNeeded: remaining), to: &buffer)
        return
    }
    while divisor > 0 {
        buffer.append(UInt8(ascii: "0") + UInt8(remaining / divisor))
        remaining %= divisor
        divisor /= 10
    }
}
