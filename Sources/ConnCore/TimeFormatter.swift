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
    private var localText = CalendarText()
    private var utcSecond: Int64 = .min
    private var utcText = CalendarText()

    public init() {
        tzset()
    }

    /// Appends `YYYY-MM-DD HH:MM:SS` in the local time zone (honouring `TZ`).
    public mutating func appendLocal(_ time: Timestamp, to buffer: inout [UInt8]) {
        var line = LineBuffer(capacity: 64)
        appendLocal(time, to: &line)
        buffer.append(contentsOf: line.bytes)
    }

    /// Appends `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
    public mutating func appendRFC3339(_ time: Timestamp, to buffer: inout [UInt8]) {
        var line = LineBuffer(capacity: 64)
        appendRFC3339(time, to: &line)
        buffer.append(contentsOf: line.bytes)
    }

    @inline(__always)
    mutating func appendLocal(_ time: Timestamp, to buffer: inout LineBuffer) {
        let second = time.seconds
        if second != localSecond {
            var clock = time_t(second)
            var fields = tm()
            localtime_r(&clock, &fields)
            localText = CalendarText(fields, separator: UInt8(ascii: " "))
            localSecond = second
        }
        localText.append(to: &buffer)
    }

    @inline(__always)
    mutating func appendRFC3339(_ time: Timestamp, to buffer: inout LineBuffer) {
        let second = time.seconds
        if second != utcSecond {
            var clock = time_t(second)
            var fields = tm()
            gmtime_r(&clock, &fields)
            utcText = CalendarText(fields, separator: UInt8(ascii: "T"))
            utcSecond = second
        }
        utcText.append(to: &buffer)
        buffer.append(UInt8(ascii: "."))
        buffer.appendPadded(UInt32(time.microsecondsOfSecond), width: 6)
        buffer.append(UInt8(ascii: "Z"))
    }
}

/// `YYYY-MM-DD?HH:MM:SS` for one second, held inline so that appending it is a single copy.
private struct CalendarText: Sendable {
    /// 19 bytes for years 0 to 9999; the spare bytes hold wider years.
    private var storage: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var count = 0

    init() {}

    init(_ fields: tm, separator: UInt8) {
        var line = LineBuffer(capacity: 64)
        line.appendPadded(UInt32(clamping: Int(fields.tm_year) + 1900), width: 4)
        line.append(UInt8(ascii: "-"))
        line.appendPadded(UInt32(clamping: fields.tm_mon + 1), width: 2)
        line.append(UInt8(ascii: "-"))
        line.appendPadded(UInt32(clamping: fields.tm_mday), width: 2)
        line.append(separator)
        line.appendPadded(UInt32(clamping: fields.tm_hour), width: 2)
        line.append(UInt8(ascii: ":"))
        line.appendPadded(UInt32(clamping: fields.tm_min), width: 2)
        line.append(UInt8(ascii: ":"))
        line.appendPadded(UInt32(clamping: fields.tm_sec), width: 2)
        count = min(line.count, MemoryLayout.size(ofValue: storage))
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: line.bytes[0..<count]))
        }
    }

    @inline(__always)
    func append(to buffer: inout LineBuffer) {
        withUnsafeBytes(of: storage) { raw in
            buffer.append(UnsafeRawBufferPointer(rebasing: raw[0..<count]))
        }
    }
}
