import ConnCapture
import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// The progress of a replay on standard error, when it is a terminal: bytes and frames read, rate and time left,
/// redrawn in place at most four times a second, erased at the end.
final class ReplayProgressDisplay: @unchecked Sendable {
    // @unchecked: updated from the capture thread only, erased by the same thread after the source returned.
    private let totalBytes: Int64?
    private let started = ReplayProgressDisplay.monotonicNow()
    private var lastDrawn: Timestamp?
    private var drawn = false
    /// Redraws are at least this far apart.
    static let interval: Int64 = 250_000_000

    private init(totalBytes: Int64?) { self.totalBytes = totalBytes }

    /// A display when standard error is a terminal, else `nil` (nothing is written to a pipe or a file).
    static func onTerminal(totalBytes: Int64?) -> ReplayProgressDisplay? {
        isatty(STDERR_FILENO) == 1 ? ReplayProgressDisplay(totalBytes: totalBytes) : nil
    }

    func update(_ progress: CaptureReadProgress) {
        let now = Self.monotonicNow()
        if let lastDrawn, now.nanoseconds &- lastDrawn.nanoseconds < Self.interval { return }
        lastDrawn = now
        let elapsed = Double(max(1, now.nanoseconds &- started.nanoseconds)) / 1e9
        let rate = Double(progress.bytesRead) / elapsed
        var line = "\rreplay: \(Self.bytes(Double(progress.bytesRead)))"
        if let totalBytes, totalBytes > 0 {
            let fraction = min(1, Double(progress.bytesRead) / Double(totalBytes))
            line += " of \(Self.bytes(Double(totalBytes))) (\(Int(fraction * 100))%)"
        }
        line += ", \(progress.frames) frames, \(Self.bytes(rate))/s"
        if let totalBytes, rate > 0, progress.bytesRead < totalBytes {
            line += ", \(Self.duration(Double(totalBytes - progress.bytesRead) / rate)) left"
        }
        writeAll(line + "\u{1B}[K", to: STDERR_FILENO)
        drawn = true
    }

    /// Clears the line, if anything was drawn.
    func erase() {
        if drawn { writeAll("\r\u{1B}[K", to: STDERR_FILENO) }
        drawn = false
    }

    private static func monotonicNow() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Timestamp(nanoseconds: Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec))
    }

    private static func bytes(_ value: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var scaled = value.isFinite ? max(0, value) : 0
        var unit = 0
        while scaled >= 1024, unit < units.count - 1 {
            scaled /= 1024
            unit += 1
        }
        return unit == 0 ? "\(Int(scaled)) B" : "\((scaled * 10).rounded() / 10) \(units[unit])"
    }

    private static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds < 360_000 else { return "?" }
        let whole = Int(seconds.rounded(.up))
        return whole >= 60 ? "\(whole / 60) min \(whole % 60) s" : "\(whole) s"
    }
}
