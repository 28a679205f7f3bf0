import ConnCore
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// A usage error in the flags (an unknown flag, a missing value): the caller shows its usage with it.
public struct SettingUsageError: Error, Hashable, Sendable {
    public let message: String
}

/// A command's settings: the one table from which its flags, its configuration file keys and its help derive.
///
/// Values are taken in order from `Root()`'s defaults, a YAML configuration file, the environment (for the
/// settings that name a variable), then flags. Every value is range-checked after the merge.
public struct SettingsTable<Root: SettingsRoot>: Sendable {
    /// The settings, in the order the help lists them.
    public let settings: [Setting<Root>]

    public init(_ settings: [Setting<Root>]) {
        self.settings = settings
    }

    /// The table with only the settings `names` names.
    public func only(_ names: Set<String>) -> SettingsTable {
        SettingsTable(settings.filter { names.contains($0.name) })
    }

    /// What ``resolve(arguments:configurationFile:)`` found.
    public struct Resolution: Sendable {
        public var values: Root
        /// Arguments that are not flags (a capture file, a prefix), in order.
        public var positional: [String]
        /// The names of the settings given as flags.
        public var givenByFlag: Set<String>
    }

    /// The settings in force: defaults, then `configurationFile`, then the environment, then `arguments`
    /// (`--name VALUE`, `--name=VALUE`, `--name`, `--no-name`; `--` ends the flags).
    /// - Throws: ``SettingUsageError`` for an unknown flag or a missing value; ``ConnCore/ConntrackrError``
    ///   (`invalidConfiguration`, one line) for an unreadable file or a bad value.
    public func resolve(arguments: [String], configurationFile: String? = nil) throws -> Resolution {
        let (flags, positional) = try parse(arguments)
        var values = Root()
        if let configurationFile { try load(configurationFile: configurationFile, into: &values) }
        let given = Set(flags.map(\.setting.name))
        for setting in settings where !given.contains(setting.name) {
            if let variable = setting.environment, let value = getenv(variable) {
                try apply(setting, .flag(String(cString: value)), to: &values, from: "$\(variable)")
            }
        }
        var lists: [String: [Any]] = [:]
        for (setting, text) in flags {
            if case .list = setting.shape {
                lists[setting.name, default: []].append(text)
            } else {
                try apply(setting, .flag(text), to: &values, from: "--\(setting.name)")
            }
        }
        for setting in settings {
            if let items = lists[setting.name] { try apply(setting, .file(items), to: &values, from: "--\(setting.name)") }
        }
        for setting in settings {
            if let problem = setting.check(values) { throw ConntrackrError(.invalidConfiguration, problem) }
        }
        return Resolution(values: values, positional: positional, givenByFlag: given)
    }

    /// Reads a YAML configuration file (JSON is YAML too) over `values`; its keys are the settings' names.
    /// - Throws: ``ConnCore/ConntrackrError`` naming the file and the offending key, never quoting the file's
    ///   content (it may be a file the caller should not have been able to read).
    public func load(configurationFile path: String, into values: inout Root) throws {
        let text: String
        do {
            text = String(decoding: try TextFile.contents(of: path), as: UTF8.self)
        } catch {
            throw ConntrackrError(.invalidConfiguration, "cannot read configuration file \(path): \(error.text)")
        }
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw ConntrackrError(.invalidConfiguration, "\(path) is not valid YAML\(Self.place(of: error))")
        }
        guard let document else { return }  // an empty file keeps the defaults
        guard let table = document as? [String: Any] else {
            throw ConntrackrError(.invalidConfiguration, "\(path): the configuration must be a mapping of settings")
        }
        let byName = Dictionary(settings.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (key, value) in table.sorted(by: { $0.key < $1.key }) {
            guard let setting = byName[key] else {
                throw ConntrackrError(.invalidConfiguration, "\(path): unknown setting \(key)")
            }
            try apply(setting, .file(value), to: &values, from: path)
        }
    }

    /// The help of every setting, for a command's discussion.
    public var helpText: String {
        "Settings (each also a key of the --config file, without the dashes):\n"
            + settings.map(\.helpLines).joined(separator: "\n")
    }

    private func apply(_ setting: Setting<Root>, _ input: SettingInput, to values: inout Root, from origin: String)
        throws
    {
        do {
            try setting.apply(&values, input)
        } catch {
            switch error {
            case .expected(let expected):
                // A flag's value is the caller's own and is shown; a file's is not.
                if case .flag(let text) = input, origin.hasPrefix("--") {
                    throw ConntrackrError(.invalidConfiguration, "\(origin) must be \(expected), not \(text.debugDescription)")
                }
                throw ConntrackrError(.invalidConfiguration, "\(origin): \(setting.name) must be \(expected)")
            case .message(let message):
                throw ConntrackrError(.invalidConfiguration, message)
            }
        }
    }

    private func parse(_ arguments: [String]) throws -> (flags: [(setting: Setting<Root>, text: String)], positional: [String]) {
        let byName = Dictionary(settings.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var flags: [(setting: Setting<Root>, text: String)] = []
        var positional: [String] = []
        var index = 0
        var flagsEnded = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard !flagsEnded, argument.hasPrefix("--"), argument.count > 2 else {
                if argument == "--", !flagsEnded { flagsEnded = true } else { positional.append(argument) }
                continue
            }
            let body = argument.dropFirst(2)
            let name = String(body.prefix { $0 != "=" })
            let attached = body.firstIndex(of: "=").map { String(body[body.index(after: $0)...]) }
            if let setting = byName[name] {
                if case .toggle = setting.shape {
                    flags.append((setting, attached ?? "true"))
                } else if let value = attached ?? (index < arguments.count ? arguments[index] : nil) {
                    if attached == nil { index += 1 }
                    flags.append((setting, value))
                } else {
                    throw SettingUsageError(message: "--\(name) needs a value")
                }
            } else if name.hasPrefix("no-"), attached == nil, let setting = byName[String(name.dropFirst(3))],
                case .toggle = setting.shape
            {
                flags.append((setting, "false"))
            } else {
                throw SettingUsageError(message: "unknown option --\(name)")
            }
        }
        return (flags, positional)
    }

    /// What the YAML parser found wrong and where, as `: PROBLEM (line L, column C)`, without the file's text.
    private static func place(of error: any Error) -> String {
        switch error as? YamlError {
        case .scanner(_, let problem, let mark, _)?, .parser(_, let problem, let mark, _)?,
            .composer(_, let problem, let mark, _)?:
            ": \(problem) (line \(mark.line), column \(mark.column))"
        default:
            ""
        }
    }
}
