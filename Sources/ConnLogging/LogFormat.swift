public import Logging

/// How log records are written to standard error.
public enum LogFormat: String, CaseIterable, Sendable {
    case text, json
}

/// Sets up logging to standard error; events go to standard output.
public func bootstrapLogging(level: Logger.Level, format: LogFormat = .text) {
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            // Not swift-log's StreamLogHandler: it writes metadata unescaped, so a newline in an etcd key or a
            // prefix would forge a log line.
            var handler = TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        case .json:
            var handler = JSONLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
