import ConnCore
import Testing

@Suite("Timestamps")
struct TimestampTests {
    @Test("Seconds and microseconds hold at the ends of Int64, never trapping", arguments: [
        (Int64.min, -9_223_372_037, 145_224),
        (Int64.max, 9_223_372_036, 854_775),
        (-1, -1, 999_999),
        (-1_000_000_000, -1, 0),
        (0, 0, 0),
        (1_500_000_999, 1, 500_000),
    ] as [(Int64, Int64, Int64)])
    func secondsAndMicroseconds(nanoseconds: Int64, seconds: Int64, microseconds: Int64) {
        let time = Timestamp(nanoseconds: nanoseconds)
        #expect(time.seconds == seconds)
        #expect(time.microsecondsOfSecond == microseconds)
        #expect(!time.description.isEmpty)
    }

    @Test("Record times are clamped into the record time range", arguments: [
        (Int64.min, 0, Timestamp.recordTimeRange.lowerBound),
        (Int64.max, 999_999_999, Timestamp.recordTimeRange.upperBound),
        (-1, 0, Timestamp.recordTimeRange.lowerBound),
        (0, -1, Timestamp.recordTimeRange.lowerBound),
        (9_223_372_036, 854_775_807, Timestamp.recordTimeRange.upperBound),  // Int64.max exactly: over the range
        (9_223_372_036, 999_999_999, Timestamp.recordTimeRange.upperBound),  // the fraction overflows
        (-9_223_372_036, Int64.min, Timestamp.recordTimeRange.lowerBound),
        (7_258_118_400, 1, Timestamp.recordTimeRange.upperBound),
        (1_619_623_685, 250_000, Timestamp(seconds: 1_619_623_685, microseconds: 250)),
        (0, 0, Timestamp(nanoseconds: 0)),
    ] as [(Int64, Int64, Timestamp)])
    func clampedRecordTimes(seconds: Int64, fraction: Int64, expected: Timestamp) {
        #expect(Timestamp(clampingSeconds: seconds, nanosecondsPastSecond: fraction) == expected)
    }

    @Test("The record time range leaves room for a minute before and a long expiry after")
    func recordRangeHeadroom() {
        let range = Timestamp.recordTimeRange
        #expect(range.lowerBound.nanoseconds.subtractingReportingOverflow(60_000_000_000).overflow == false)
        let fiftyYears = Duration.seconds(50 * 365 * 86_400).nanosecondsClamped
        #expect(range.upperBound.nanoseconds.addingReportingOverflow(fiftyYears).overflow == false)
        #expect(range.upperBound.description == "2200-01-01T00:00:00.000000Z")
    }

    @Test("Adding a duration or subtracting a time saturates instead of wrapping", arguments: [
        (Int64.max - 5, Int64.max),
        (Int64.max, Int64.max),
        (0, 3_600_000_000_000),
        (Int64.min, Int64.min + 3_600_000_000_000),
    ])
    func additionSaturates(start: Int64, expected: Int64) {
        #expect((Timestamp(nanoseconds: start) + .seconds(3600)).nanoseconds == expected)
    }

    @Test func subtractionSaturates() {
        #expect((Timestamp(nanoseconds: Int64.max) - Timestamp(nanoseconds: Int64.min)) == .nanoseconds(Int64.max))
        #expect((Timestamp(nanoseconds: Int64.min) - Timestamp(nanoseconds: Int64.max)) == .nanoseconds(Int64.min))
        #expect((Timestamp(nanoseconds: 5) - Timestamp(nanoseconds: 2)) == .nanoseconds(3))
        #expect(Int64.max.saturatingAdding(1) == .max)
        #expect(Int64.min.saturatingAdding(-1) == .min)
    }

    @Test("Events at the ends of Int64 format without trapping (issue 13: a fleet expiry of Int64.max)",
        arguments: [Int64.max, Int64.min, Int64.max - 1, Int64.min + 1, -1])
    func extremeTimesFormat(nanoseconds: Int64) {
        let time = Timestamp(nanoseconds: nanoseconds)
        let prefix = IPPrefix("198.51.100.7/32")!
        for format in [OutputFormat.text, .json] {
            var formatter = EventFormatter(format: format)
            #expect(!formatter.line(for: .unblocked(prefix, reason: .expired, at: time)).isEmpty)
            let entry = BlockEntry(prefix: prefix, reason: .portScan, origin: .fleet, since: time, expires: time)
            #expect(!formatter.line(for: .blocked(entry, at: time)).isEmpty)
        }
        #expect(!time.description.isEmpty)
    }
}
