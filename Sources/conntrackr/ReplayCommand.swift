import ArgumentParser
import ConnCapture
import ConnCore
import ConnLogging
import ConnSettings
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `conntrackr replay FILE...`: the live pipeline over capture files, with the files' own timestamps.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Analyse pcap or pcapng files (plain, gzip, zstd) with the same pipeline as live capture, then exit.",
        discussion: """
            Several files are analysed as one capture, their records merged in time order (a tcpdump -G/-C \
            rotation in any order, or captures of several interfaces); scan and retransmission state runs across \
            them. A file that cannot be read is named on standard error and the others are still analysed; the exit \
            status is then 1. Gzip and zstd files are read directly. At a terminal, standard error shows progress.

            """ + "\n" + AgentSettings.detection.helpText
    )

    @Argument(
        parsing: .allUnrecognized,
        help: ArgumentHelp(
            "The capture files (pcap or pcapng, plain, gzip or zstd; - reads standard input), and settings.",
            valueName: "file"
        )
    )
    var arguments: [String] = []

    /// The settings and the capture files the arguments name.
    private func resolve() throws -> (AgentSettings, files: [String]) {
        do {
            let resolved = try AgentSettings.resolve(
                arguments: arguments, configurationFile: nil, table: AgentSettings.detection
            )
            guard !resolved.positional.isEmpty else { throw ValidationError("missing the capture file") }
            guard resolved.positional.count(where: { $0 == "-" }) <= 1 else {
                throw ValidationError("standard input (-) can be read only once")
            }
            return (resolved.0, resolved.positional)
        } catch let error as ConntrackrError {
            throw ValidationError(error.message)
        }
    }

    func validate() throws {
        _ = try resolve()
    }

    func run() throws {
        let (settings, files) = try resolve()
        bootstrapLogging(level: settings.logLevel)
        signal(SIGPIPE, SIG_IGN)
        let writer = EventWriter(format: settings.format, policy: .lossless)
        let written = FilteringEventSink.wrapping(writer, kinds: settings.events)
        // The summary sees every event, whatever kinds are written.
        let summary = settings.summary ? ScanSummary() : nil
        let pipeline = ConnectionPipeline(
            configuration: settings.pipelineConfiguration,
            events: summary.map { BroadcastEventSink([$0, written]) } ?? written,
            units: SourceUnits(ipv6PrefixLength: settings.ipv6BlockPrefix)
        )
        let display = ReplayProgressDisplay.onTerminal(totalBytes: Self.totalBytes(of: files))
        let progress = display.map { display in { @Sendable (read: CaptureReadProgress) in display.update(read) } }
        var failures: [ConntrackrError] = []
        if files.count == 1 {
            // One file: the plain source, as before several could be given.
            do {
                try PcapFileSource(path: files[0], progress: progress).run(into: pipeline)
            } catch let error as ConntrackrError {
                failures.append(error)
            } catch {
                failures.append(ConntrackrError(.unreadableCapture, "\(files[0]): \(error)"))
            }
        } else {
            let source = MergedPcapFileSource(paths: files, progress: progress)
            do {
                try source.run(into: pipeline)
            } catch let error as ConntrackrError {
                failures.append(error)
            } catch {
                failures.append(ConntrackrError(.captureFailed, "\(error)"))
            }
            failures = source.failures + failures
        }
        display?.erase()
        writer.close()
        if let summary {
            var formatter = SummaryFormatter(format: settings.format)
            let totals = ReplayTotals(
                files: files.count,
                failedFiles: failures.count,
                statistics: pipeline.statistics,
                malformed: pipeline.malformedByReason
            )
            writeAll(formatter.render(summary, totals: totals), to: STDOUT_FILENO)
        }
        if let last = failures.last {
            for failure in failures.dropLast() { writeAll("conntrackr: \(failure.message)\n", to: STDERR_FILENO) }
            exitWithFailure(last)
        }
        let statistics = pipeline.statistics
        if statistics.malformedFrames > 0 {
            Logger(label: "conntrackr.replay").notice(
                "skipped malformed frames",
                metadata: ["count": "\(statistics.malformedFrames)", "frames": "\(statistics.frames)"]
            )
        }
    }

    /// The files' sizes together, when every one is a regular file (else progress shows no time left).
    private static func totalBytes(of files: [String]) -> Int64? {
        var total: Int64 = 0
        for file in files {
            guard let size = PcapFileSource.fileSize(of: file) else { return nil }
            total = total.addingReportingOverflow(size).overflow ? Int64.max : total + size
        }
        return total
    }
}

/// Writes all of `text` to a file descriptor, ignoring a reader that went away.
func writeAll(_ text: String, to descriptor: Int32) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < raw.count {
            let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
