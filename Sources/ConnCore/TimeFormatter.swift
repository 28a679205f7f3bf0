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
    private var localText = CalendarText(zone: .local)
    private var utcText = CalendarText(zone: .utc)

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
        localText.append(second: time.seconds, to: &buffer)
    }

    @inline(__always)
    mutating func appendRFC3339(_ time: Timestamp, to buffer: inout LineBuffer) {
        utcText.append(second: time.seconds, to: &buffer)
        buffer.append(UInt8(ascii: "."))
        buffer.appendPadded(UInt32(time.microsecondsOfSecond), width: 6)
        buffer.append(UInt8(ascii: "Z"))
    }
}

/// `YYYY-MM-DD?HH:MM:SS` of the last second asked for, held inline so that appending it is a single copy.
private struct CalendarText: Sendable {
    enum Zone: Sendable {
        /// `YYYY-MM-DD HH:MM:SS` in the time zone of `TZ`.
        case local
        /// `YYYY-MM-DDTHH:MM:SS`.
        case utc
    }

    let zone: Zone
    private var second: Int64 = .min
    /// 19 bytes for years 0 to 9999; the spare bytes hold wider years.
    private var storage: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var count = 0

    init(zone: Zone) {
        self.zone = zone
    }

    /// Appends the text of `second`, converting it only when it is not the last one.
    @inline(__always)
    mutating func append(second: Int64, to buffer: inout LineBuffer) {
        if second != self.second { convert(second) }
        withUnsafeBytes(of: storage) { raw in
            buffer.append(UnsafeRawBufferPointer(rebasing: raw[0..<count]))
        }
    }

    private mutating func convert(_ second: Int64) {
        var clock = time_t(second)
        var fields = tm()
        switch zone {
        case .local: localtime_r(&clock, &fields)
        case .utc: gmtime_r(&clock, &fields)
        }
        let separator = zone == .local ? UInt8(ascii: " ") : UInt8(ascii: "T")
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
        self.second = second
    }
}
